"""Hostile input to the command line (issue 12): every case is one clear line, never a traceback, and
nothing is lost. Run-folder faults (crashes mid-save, locks, resume) are in tests/engine/test_run_folder.py.

Read-only folders are real: as root (which ignores permission bits) the command runs without the
capabilities that let root write anywhere (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER).
"""

import ctypes
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import cnnzoo.summary.probe as probe
from cnnzoo.cli import main
from cnnzoo.errors import CnnzooError

QUIET_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("cnnzoo: error: "), err
    assert not any("Traceback" in line for line in err)
    return err[-1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch LeNet-5 run on 640 MNIST images (under a second of training)."""
    run = tmp_path_factory.mktemp("run") / "run"
    args = ["train", "lenet5", "--train-subset", "640", "--batch-size", "64", "--epochs", "1", "--quiet"]
    assert main([*args, "--out", str(run)]) == 0
    return run


def _drop_root_powers() -> None:
    """In the child, before exec: root without the capabilities that bypass permission bits."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture(scope="module")
def run_read_only(tmp_path_factory):
    """`cnnzoo ARGS` as a user whom read-only folders stop; skipped where that cannot be arranged."""
    kwargs = {"preexec_fn": _drop_root_powers} if os.geteuid() == 0 else {}
    probe_dir = tmp_path_factory.mktemp("probe")
    probe_dir.chmod(0o555)
    try:
        r = subprocess.run(
            [sys.executable, "-c", f"open({str(probe_dir / 'x')!r}, 'w')"], capture_output=True, **kwargs
        )
    except (subprocess.SubprocessError, OSError):
        r = None
    probe_dir.chmod(0o755)
    if r is None or r.returncode == 0:
        pytest.skip("this user writes into read-only folders (root without a way to drop capabilities)")

    def run(args) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "cnnzoo", *args],
            capture_output=True,
            text=True,
            timeout=300,
            env=QUIET_ENV,
            **kwargs,
        )

    return run


def assert_one_line(r: subprocess.CompletedProcess, code: int = 2) -> str:
    assert r.returncode == code, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    return r.stderr.strip().splitlines()[-1]


@pytest.fixture()
def read_only(tmp_path, run):
    """A read-only folder holding a copy of the run; permissions restored afterwards."""
    base = tmp_path / "ro"
    shutil.copytree(run, base / "run")
    for p in [*(base / "run").iterdir(), base / "run", base]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    yield base
    for p in [base, base / "run"]:
        p.chmod(0o755)


# --- read-only folders, files in the way, missing folders ---------------------------------------


def test_read_only_run_folder_resumed(read_only, run_read_only):
    base = read_only
    line = assert_one_line(run_read_only(["train", "--resume", str(base / "run"), "--epochs", "2"]))
    assert re.search(
        rf"cannot write in the run folder {re.escape(str(base / 'run'))}: Permission denied", line
    )
    assert json.loads((base / "run" / "last.json").read_text())["epoch"] == 1  # untouched


def test_read_only_run_folder_evaluated(read_only, run_read_only):
    """The figures are computed and printed; the plot that cannot be written is one line saying where to."""
    base = read_only
    r = run_read_only(["evaluate", str(base / "run")])
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "accuracy" in r.stdout
    assert f"cannot write {base / 'run' / 'confusion-mnist.png'}: Permission denied" in r.stderr
    assert "--confusion-png" in r.stderr


def test_read_only_output_folders(read_only, run, run_read_only):
    base = read_only
    line = assert_one_line(run_read_only(["train", "lenet5", "--out", str(base / "new")]))
    assert f"cannot create the run folder {base / 'new'}: Permission denied" in line
    line = assert_one_line(
        run_read_only(["finetune", "--from", str(run), "--data", "digits", "--out", str(base / "ft")])
    )
    assert f"cannot create the run folder {base / 'ft'}: Permission denied" in line
    line = assert_one_line(run_read_only(["study", "transfer", "--quick", "--out", str(base / "study")]))
    assert f"cannot create {base / 'study'} (--out): Permission denied" in line
    line = assert_one_line(run_read_only(["evaluate", str(run), "--confusion-png", str(base / "c.png")]))
    assert f"cannot write in {base} (--confusion-png): Permission denied" in line


def test_confusion_png_into_a_missing_folder_is_created(run, tmp_path, capsys):
    png = tmp_path / "plots" / "deeper" / "confusion.png"
    assert main(["evaluate", str(run), "--confusion-png", str(png)]) == 0
    assert png.stat().st_size > 0
    assert f"confusion matrix plot: {png}" in capsys.readouterr().out


def test_files_in_the_way(run, tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    assert main(["study", "transfer", "--out", str(tmp_path / "file")]) == 2
    assert f"--out {tmp_path / 'file'} is a file, not a folder" in one_line_error(capsys)
    assert main(["evaluate", str(run), "--confusion-png", str(tmp_path)]) == 2
    assert "is a folder: name a file" in one_line_error(capsys)
    assert main(["finetune", "--from", str(run), "--data", "digits", "--out", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in one_line_error(capsys)
    assert (tmp_path / "file").read_text() == "mine"


def test_evaluate_a_checkpoint_missing_a_key(run, tmp_path, capsys):
    broken = tmp_path / "run"
    shutil.copytree(run, broken)
    for tag in ("best", "last"):
        meta = json.loads((broken / f"{tag}.json").read_text())
        del meta["image_size"]
        (broken / f"{tag}.json").write_text(json.dumps(meta))
    assert main(["evaluate", str(broken)]) == 2
    assert "best.json: checkpoint config lacks 'image_size'" in one_line_error(capsys)
    assert main(["predict", str(broken), "x.png"]) == 2
    assert "lacks 'image_size'" in one_line_error(capsys)


def test_evaluate_on_other_classes_of_the_same_count_says_so(run, tmp_path, capsys):
    """A digit model scored on Fashion-MNIST prints its figure, and a line that the classes differ."""
    plot = str(tmp_path / "confusion.png")
    assert main(["evaluate", str(run), "--data", "fashion-mnist", "--confusion-png", plot]) == 0
    err = capsys.readouterr().err
    assert "the checkpoint's classes are not fashion-mnist's (class 0: '0' vs 'T-shirt/top')" in err
    assert main(["evaluate", str(run), "--data", "digits", "--confusion-png", plot]) == 0
    assert "classes are not" not in capsys.readouterr().err  # the same digits, the same names


def test_a_fifo_as_output_is_written_into_not_replaced(run, tmp_path):
    """`--confusion-png /dev/null` (as root) had renamed a regular file onto the device; a fifo stands in
    for it here, so that a regression cannot break the machine's /dev/null."""
    fifo = tmp_path / "plot.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    assert main(["evaluate", str(run), "--confusion-png", str(fifo)]) == 0
    reader.join(timeout=30)
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # still the fifo, not a file renamed onto it
    assert received and received[0].startswith(b"\x89PNG")


def test_an_os_error_anywhere_is_one_line(monkeypatch, capsys):
    """The last resort for the environment's faults: an OSError no command turned into a message."""
    import cnnzoo.cli as cli

    def vanished(args):
        raise FileNotFoundError(2, "No such file or directory", "/gone/file")

    monkeypatch.setattr(cli, "cmd_models", vanished)
    assert main(["models"]) == 1
    assert "cnnzoo: error: /gone/file: No such file or directory" in capsys.readouterr().err


# --- sizes: chosen right, or refused before any work ---------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A user's photos: 28 to 90 px, PNG/JPEG/BMP/WebP/GIF, two classes told apart by a bright top half."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for c in ("bright", "dark"):
        (root / c).mkdir()
        for i in range(10):
            side = int(rng.integers(28, 91))
            a = (rng.random((side, side, 3)) * 120).astype(np.uint8)
            if c == "bright":
                a[: side // 2] = 255
            Image.fromarray(a).save(root / c / f"{i}.{['png', 'jpg', 'bmp', 'webp', 'gif'][i % 5]}")
    return root


def test_lenet_on_mixed_size_photos_takes_its_native_size(photos, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "lenet5", "--data", f"folder:{photos}", "--epochs", "1", "--out", str(out)]) == 0
    assert "28x28" in capsys.readouterr().out
    assert json.loads((out / "last.json").read_text())["image_size"] == 28


def test_a_size_the_model_cannot_take_is_refused_before_any_work(photos, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "lenet5", "--data", f"folder:{photos}", "--out", str(out)]
    assert main([*args, "--image-size", "49"]) == 2
    line = one_line_error(capsys)
    assert "--image-size 49: lenet5 cannot take it (LeNet-5 takes images up to 32x32, got 49x49)" in line
    assert not out.exists()  # refused before the run folder, the data or the model
    assert main([*args, "--image-size", "20"]) == 2
    assert "its minimum is 28" in one_line_error(capsys)


def test_summary_checks_memory_before_allocating(monkeypatch, capsys):
    monkeypatch.setattr(probe, "available_memory", lambda device="cpu": 8 * 10**9)
    assert main(["summary", "lenet5", "--input-size", "200000"]) == 2
    line = one_line_error(capsys)
    assert "a 1x200000x200000 input alone needs 160.0 GB of memory, 8.0 GB is available" in line
    assert "native input is 28" in line
    assert main(["summary", "resnet18", "--input-size", "20000"]) == 2
    assert re.search(
        r"summarising resnet18 on a 3x20000x20000 input needs about [\d.]+ GB", one_line_error(capsys)
    )
    assert main(["summary", "lenet5", "--input-size", "64"]) == 2
    assert "lenet5 cannot run on a 1x64x64 input: LeNet-5 takes images up to 32x32" in one_line_error(capsys)


def test_training_data_that_cannot_fit_in_memory_is_refused(tmp_path, capsys):
    assert main(["train", "vgg11", "--image-size", "20000", "--out", str(tmp_path / "r")]) == 2
    assert re.search(
        r"70,000 images of mnist at 20000x20000 need [\d.,]+ TB of memory", one_line_error(capsys)
    )


# --- pictures to predict ------------------------------------------------------------------------


def test_predict_reads_16_bit_like_8_bit_and_refuses_a_bomb(run, tmp_path, capsys):
    from cnnzoo.data import load_dataset

    digit = load_dataset("mnist").test.images[0, 0].numpy()
    Image.fromarray(digit).save(tmp_path / "8.png")
    Image.fromarray(digit.astype(np.uint16) * 257).save(tmp_path / "16.png")
    assert main(["predict", str(run), str(tmp_path / "8.png"), str(tmp_path / "16.png"), "--json"]) == 0
    eight, sixteen = json.loads(capsys.readouterr().out)
    assert eight["top"] == sixteen["top"]
    bomb = Image.new("1", (50_000, 50_000))
    bomb.save(tmp_path / "bomb.png", optimize=True)
    del bomb
    assert main(["predict", str(run), str(tmp_path / "bomb.png")]) == 2
    assert "decompression bomb" in one_line_error(capsys)


# --- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "lenet5", "--momentum", "-0.5"], "momentum must be 0 or more, got -0.5"),
        (["train", "lenet5", "--weight-decay", "-1"], "weight decay must be 0 or more, got -1.0"),
        (["train", "lenet5", "--checkpoint-minutes", "-1"], "checkpoint minutes must be 0 (off) or more"),
        (["train", "lenet5", "--momentum", "inf"], "momentum must be a finite number, got inf"),
        (["train", "lenet5", "--weight-decay", "nan"], "weight decay must be a finite number, got nan"),
    ],
)
def test_bad_numbers_are_one_line(args, message, capsys, tmp_path):
    assert main([*args, "--out", str(tmp_path / "r")]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("n", ["0", "-3"])
def test_samples_per_class_must_be_positive(n, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["finetune", "--from", "x", "--data", "digits", "--samples-per-class", n])
    assert exit.value.code == 2
    assert f"--samples-per-class: expected a positive integer, got {n}" in capsys.readouterr().err


def test_finetune_config_refuses_negative_samples_per_class():
    from cnnzoo.transfer.finetune import FinetuneConfig

    with pytest.raises(CnnzooError, match="samples per class must be positive"):
        FinetuneConfig(source="x", samples_per_class=-1)


def test_random_bytes_as_a_source_are_not_called_python_objects(tmp_path, capsys):
    noise = tmp_path / "weights.pth"
    noise.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert main(["finetune", "--from", str(noise), "--data", "digits", "--out", str(tmp_path / "r")]) == 2
    line = one_line_error(capsys)
    assert "its bytes are not a PyTorch file" in line and "Python objects" not in line
    truncated = tmp_path / "cut.pth"
    torch.save({"w": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    assert main(["finetune", "--from", str(truncated), "--data", "digits", "--out", str(tmp_path / "r")]) == 2
    assert "truncated or corrupt" in one_line_error(capsys)


# --- Ctrl-C while starting ----------------------------------------------------------------------


def interruptible():
    """Start the child taking Ctrl-C as a terminal's foreground job does, however the suite was started
    (a background job of a script starts with SIGINT ignored, and its children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("delay", [0.3, 0.6, 1.0, 1.3, 2.0])
def test_ctrl_c_while_starting_up_is_no_traceback(delay, tmp_path):
    """SIGINT while Python imports torch (or, later, loads the data): one line, exit 130, no traceback.
    (An interrupt inside numpy's C initialisation used to surface as an ImportError traceback.)"""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnzoo", "train", "lenet5", "--train-subset", "640", "--epochs", "1",
         "--out", str(tmp_path / "r")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=QUIET_ENV,
        preexec_fn=interruptible,
    )  # fmt: skip
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err[-2000:]
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert err.strip().endswith("cnnzoo: interrupted") or "continue with: cnnzoo train --resume" in out


def test_ctrl_c_ignored_by_the_parent_stays_ignored_while_torch_loads(tmp_path):
    """`cnnzoo train ... &` in a script starts with SIGINT ignored; a Ctrl-C meant for the script must not
    stop it while torch loads (the deferral used to turn it into 'interrupted'). A stand-in torch module
    sends the SIGINT during its import, so the test does not depend on timing."""
    (tmp_path / "torch.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGINT)\n")
    script = (
        "import signal, sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from cnnzoo.cli import _import_torch_deferring_ctrl_c\n"
        "signal.signal(signal.SIGINT, signal.{})\n"
        "try:\n"
        "    _import_torch_deferring_ctrl_c()\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n"
    )
    # ignored: stays ignored (exit 0); Python's default handler: held back, then raised (exit 130)
    for handler, code in (("SIG_IGN", 0), ("default_int_handler", 130)):
        r = subprocess.run(
            [sys.executable, "-c", script.format(handler)], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == code, (handler, r.stderr[-2000:])


def test_cnnzoo_warnings_are_one_line():
    """A warning of cnnzoo's own (corrupt images skipped) is printed as `cnnzoo: warning: ...`, without
    Python's file name and source line; other libraries' warnings keep their form."""
    import cnnzoo.cli as cli
    import cnnzoo.data.sources as sources

    fmt = cli._one_line_warnings()
    line = fmt(UserWarning("skipped 1 unreadable image file(s)"), UserWarning, sources.__file__, 182, "x")
    assert line == "cnnzoo: warning: skipped 1 unreadable image file(s)\n"
    other = fmt(UserWarning("theirs"), UserWarning, "/usr/lib/python3/dist-packages/x.py", 3, "x()")
    assert other.startswith("/usr/lib/python3/dist-packages/x.py:3: UserWarning: theirs")


def test_unknown_fields_of_a_config_are_named(run, tmp_path, capsys):
    from cnnzoo.engine.config import load_config

    config = json.loads((run / "config.json").read_text())
    (tmp_path / "c.json").write_text(json.dumps({**config, "epoch": 20}))  # a typo for "epochs"
    assert load_config(tmp_path / "c.json").epochs == config["epochs"]
    err = capsys.readouterr().err
    assert f"cnnzoo: {tmp_path / 'c.json'}: ignored 'epoch': not a training option" in err
    load_config(run / "config.json")
    assert capsys.readouterr().err == ""


# --- explain --out ------------------------------------------------------------------------------


def test_explain_out_in_the_way_or_read_only(run, tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    args = ["explain", str(run), "--method", "filters"]
    assert main([*args, "--out", str(tmp_path / "file")]) == 2  # was 'File exists', exit 1
    assert f"--out {tmp_path / 'file'} is a file, not a folder" in one_line_error(capsys)
    assert (tmp_path / "file").read_text() == "mine"


def test_explain_read_only_out(read_only, run_read_only):
    line = assert_one_line(
        run_read_only(["explain", str(read_only / "run"), "--method", "filters", "--out", str(read_only)])
    )
    assert f"cannot write in {read_only} (--out): Permission denied" in line


def test_explain_class_names_stay_inside_out(tmp_path, capsys):
    """fashion-mnist's class 'T-shirt/top' made a sub-folder 'x-saliency-T-shirt'; a checkpoint's class
    '../x' would have written outside --out."""
    from cnnzoo.explain.files import file_part

    image = tmp_path / "shirt.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    out = tmp_path / "out"
    args = ["explain", "lenet5:fashion-mnist", str(image), "--method", "saliency", "--target", "T-shirt/top"]
    assert main([*args, "--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["shirt-saliency-T-shirt_top.png"]
    assert file_part("../../etc/x") == "etc_x" and file_part("..") == "class" and file_part("7") == "7"
