"""The thread policy (runtime.ThreadTuner): the count is chosen from measured work, and measured again."""

import pytest
import torch

from cnnzoo import runtime
from cnnzoo.errors import CnnzooError
from cnnzoo.runtime import ThreadTuner


class Machine:
    """A fake clock whose units of work cost `cost[threads]` seconds each."""

    def __init__(self, cost: dict[int, float]):
        self.cost, self.now, self.threads = cost, 0.0, 0

    def set(self, n: int) -> None:
        self.threads = n

    def work(self, tuner: ThreadTuner, units: int = 1, n: int = 1) -> None:
        for _ in range(n):
            self.now += self.cost[self.threads] * units
            tuner.tick(units)


def tuner_on(machine: Machine, **kw) -> ThreadTuner:
    return ThreadTuner(
        [2, 1], clock=lambda: machine.now, apply=machine.set, current=lambda: machine.threads, **kw
    )


def test_a_busy_machine_gets_fewer_threads():
    machine = Machine({2: 0.060, 1: 0.008})  # what a competing process does to 2 threads on 2 cores
    tuner = tuner_on(machine)
    machine.work(tuner, n=20)
    assert tuner.chosen == 1 and machine.threads == 1
    assert tuner.timings == {2: pytest.approx(0.060), 1: pytest.approx(0.008)}


def test_a_quiet_machine_keeps_its_cores_and_noise_does_not_cost_them():
    for one_thread in (0.012, 0.0099):  # slower, and faster by less than 5%
        machine = Machine({2: 0.010, 1: one_thread})
        tuner = tuner_on(machine)
        machine.work(tuner, n=20)
        assert tuner.chosen == 2 and machine.threads == 2


def test_the_choice_is_measured_again_when_the_load_changes():
    machine = Machine({2: 0.010, 1: 0.018})
    tuner = tuner_on(machine, recheck_s=5.0)
    machine.work(tuner, n=20)
    assert tuner.chosen == 2
    machine.cost = {2: 0.080, 1: 0.016}  # another process starts
    machine.work(tuner, n=int(6.0 / 0.080) + 20)
    assert tuner.chosen == 1 and machine.threads == 1


def test_time_between_units_is_not_counted_and_units_are_per_image():
    machine = Machine({2: 0.010, 1: 0.012})
    tuner = tuner_on(machine)
    for _ in range(20):
        machine.now += 5.0 if machine.threads == 2 else 0.0  # an evaluation between epochs, say
        tuner.begin()
        machine.work(tuner, units=32)
    assert tuner.chosen == 2
    assert tuner.timings[2] == pytest.approx(0.010)


def test_someone_else_changing_the_count_is_undone():
    machine = Machine({2: 0.010, 1: 0.050})
    tuner = tuner_on(machine)
    machine.work(tuner, n=20)
    machine.set(1)  # another tuner, or user code
    tuner.begin()
    assert machine.threads == 2


def test_the_user_fixes_the_count(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setenv("CNNZOO_THREADS", "1")
        assert runtime.thread_tuner("cpu", "train") is None
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("CNNZOO_THREADS", "many")
        with pytest.raises(CnnzooError, match="CNNZOO_THREADS"):
            runtime.thread_tuner("cpu", "train")
        monkeypatch.delenv("CNNZOO_THREADS")
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torchrun's workers, and anyone who sets it
        assert runtime.thread_tuner("cpu", "train") is None
        assert runtime.thread_tuner("meta", "train") is None
        monkeypatch.delenv("OMP_NUM_THREADS")
        tuner = runtime.thread_tuner("cpu", "train", max_threads=4)
        assert tuner is not None and tuner.candidates == [4, 2, 1]
        assert runtime.thread_tuner("cpu", "train", max_threads=1) is None
    finally:
        torch.set_num_threads(before)


def test_a_real_fit_is_tuned(monkeypatch, tmp_path):
    """End to end: with the count left to cnnzoo, a short fit measures each candidate."""
    from cnnzoo.engine.config import default_config
    from cnnzoo.engine.train import train

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("CNNZOO_THREADS", raising=False)
    monkeypatch.setattr(runtime, "_DEFAULT_THREADS", 2)
    monkeypatch.setattr(runtime, "_TUNERS", {})
    try:
        cfg = default_config("lenet5", "mnist", epochs=1, batch_size=32, train_subset=640)
        train(cfg, run_dir=tmp_path / "run", quiet=True)
        assert set(runtime._TUNERS["train"].timings) == {2, 1}
        assert runtime._TUNERS["train"].chosen in (1, 2)
    finally:
        torch.set_num_threads(before)


def test_a_probe_of_a_much_slower_count_costs_one_unit_and_rechecks_back_off():
    machine = Machine({2: 0.200, 1: 0.010})  # a heavily loaded machine
    tuner = tuner_on(machine, recheck_s=1.0)
    spent = []
    for _ in range(400):
        spent.append(machine.threads)
        machine.work(tuner)
    slow_units = spent.count(2)
    # one unit per measurement; measurements at ~1, 3, 7, 15, 23 s...: the interval doubles up to 8x
    assert tuner.chosen == 1
    assert 1 <= slow_units <= 6, slow_units
