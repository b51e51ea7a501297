"""Progress where no bar is drawn: a line every few seconds with the time left, and epoch lines that say
which times are the epoch's own and which the run's."""

import re

from cnnzoo.engine import loop
from cnnzoo.engine.config import default_config
from cnnzoo.engine.train import train
from cnnzoo.runtime import format_duration


def test_a_log_gets_progress_lines_with_the_time_left(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(loop, "HEARTBEAT_SECONDS", 0.0)  # every sync point, instead of every 10 s
    cfg = default_config("lenet5", "mnist", epochs=2, batch_size=64, train_subset=640)
    train(cfg, run_dir=tmp_path / "run", quiet=False)
    out = capsys.readouterr().out
    beats = re.findall(
        r"epoch (\d)/2: (\d+)% \((\d+)/10 batches\)  loss [\d.]+  acc [\d.]+%  img/s [\d,]+  ~(.+) left", out
    )
    assert beats, out
    assert {b[0] for b in beats} == {"1", "2"}
    assert all(int(b[1]) == 10 * int(b[2]) for b in beats)
    epochs = re.findall(
        r"epoch (\d)/2: train loss .*\(([\d.]+) s this epoch, ([\d.]+) s in all(, ~.+ left)?\)", out
    )
    assert [e[0] for e in epochs] == ["1", "2"], out
    assert epochs[0][3] and not epochs[1][3]  # time left after the first epoch only
    assert float(epochs[1][2]) >= float(epochs[1][1])  # the run's time includes the epoch's


def test_a_terminal_or_a_quiet_run_gets_no_lines(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(loop, "HEARTBEAT_SECONDS", 0.0)
    cfg = default_config("lenet5", "mnist", epochs=1, batch_size=64, train_subset=320)
    train(cfg, run_dir=tmp_path / "run", quiet=True)
    assert "batches)" not in capsys.readouterr().out


def test_durations_read_at_a_glance():
    assert [format_duration(s) for s in (3.21, 45.4, 190, 3900)] == [
        "3.2 s",
        "45 s",
        "3 min 10 s",
        "1 h 05 min",
    ]
