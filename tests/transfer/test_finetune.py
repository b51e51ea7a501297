"""Fine-tuning end to end on tiny data: every strategy, checkpoints, frozen BatchNorm, rates, bad input.

The source is a LeNet-5 pretrained once (module fixture) on 1,500 MNIST images; the target is
scikit-learn's digits (8x8 scans upscaled to 28x28), cut to a few images per class.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import cnnzoo
from cnnzoo import create_model
from cnnzoo.artifacts.checkpoint import save_checkpoint
from cnnzoo.cli import main
from cnnzoo.data.base import Splits
from cnnzoo.engine import TrainConfig, load_checkpoint
from cnnzoo.engine.evaluate import evaluate_checkpoint
from cnnzoo.errors import CnnzooError
from cnnzoo.transfer import groups
from cnnzoo.transfer.finetune import FinetuneConfig, finetune

LENET_GROUPS = ["conv1", "conv2", "fc1", "fc2", "head"]
FROZEN = {  # lenet5 groups whose weights a strategy must leave exactly as the source's
    "head": {"conv1", "conv2", "fc1", "fc2"},
    "last:1": {"conv1", "conv2", "fc1"},
    "last:2": {"conv1", "conv2"},
    "full": set(),
    "gradual": set(),
    "scratch": set(),
}


def small_cfg(**kw) -> TrainConfig:
    base = dict(model="lenet5", data="digits", epochs=2, batch_size=32, lr=0.01, precision="fp32")
    return TrainConfig(**{**base, **kw})


def _group_of_key(model) -> dict[str, str]:
    """State-dict key -> group: parameters by name, buffers by the group of their module's parameters."""
    out, module_group = {}, {}
    for group, names in groups(model):
        for n in names:
            out[n] = group
            module_group[n.rsplit(".", 1)[0]] = group
    for name, _ in model.named_buffers():
        out[name] = module_group[name.rsplit(".", 1)[0]]
    return out


# --- every strategy through the Python API ------------------------------------------------------------


@pytest.mark.parametrize("strategy", list(FROZEN))
def test_each_strategy_writes_a_checkpoint_with_the_sources_preprocessing(strategy, source, digits, tmp_path):
    ft = FinetuneConfig(source=str(source), strategy=strategy, samples_per_class=10, head_epochs=1)
    result = finetune(ft, small_cfg(), run_dir=tmp_path / "run", quiet=True, splits=digits)
    assert 0 <= result.final_acc <= 100 and result.run_dir == tmp_path / "run"

    ckpt = load_checkpoint(tmp_path / "run")
    src_meta = json.loads((source / "best.json").read_text())
    assert ckpt.meta["model"] == "lenet5" and ckpt.classes == list(digits.info.classes)
    assert ckpt.model.num_classes == 10
    # the source's preprocessing (MNIST statistics), not the target's own
    for key in ("image_size", "mean", "std"):
        assert ckpt.meta[key] == src_meta[key], key
    assert ckpt.meta["mean"] != list(digits.info.mean) and ckpt.meta["std"] != list(digits.info.std)
    assert ckpt.meta["strategy"] == strategy and ckpt.meta["finetuned_from"] == str(source)
    with torch.no_grad():
        assert ckpt.model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)

    # exactly the frozen groups still hold the source's weights
    src_state = load_file(str(source / "best.safetensors"))
    state = ckpt.model.state_dict()
    key_group = _group_of_key(ckpt.model)
    unchanged = {g for g in LENET_GROUPS if all(torch.equal(state[k], src_state[k]) for k in state if key_group[k] == g)}  # fmt: skip
    assert unchanged == FROZEN[strategy]


def test_loads_the_target_by_name_and_keeps_samples_per_class(source, tmp_path):
    """Without `splits`, `cfg.data` is loaded; `samples_per_class` cuts the training split."""
    ft = FinetuneConfig(source=str(source), strategy="last:1", samples_per_class=3)
    result = finetune(ft, small_cfg(epochs=1, batch_size=10), run_dir=tmp_path / "run", quiet=True)
    assert len(result.history) == 1
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["finetune"]["samples_per_class"] == 3 and saved["train"]["data"] == "digits"
    assert json.loads((tmp_path / "run" / "last.json").read_text())["epoch"] == 1


def test_head_on_cached_features_reports_the_whole_models_accuracy(source, digits, tmp_path, capsys):
    ft = FinetuneConfig(source=str(source), strategy="head", samples_per_class=20)
    result = finetune(ft, small_cfg(epochs=5, lr=0.05), run_dir=tmp_path / "run", quiet=True, splits=digits)
    assert result.final_acc > 30.0  # MNIST features on digits with 200 images: well above chance (10%)
    meta = json.loads((tmp_path / "run" / "best.json").read_text())
    assert meta["metrics"]["test_acc"] == result.final_acc
    assert meta["metrics"]["trainable_groups"] == ["head"]
    # the head trained on cached vectors scores what the whole network scores on images (the same count
    # of correct images; one is 0.28 points, float32 and float64 means differ by ~1e-6)
    assert result.history[-1]["test_acc"] == pytest.approx(result.final_acc, abs=1e-4)
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--data", "digits", "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["images"] == len(digits.test)
    assert metrics["accuracy"] == pytest.approx(result.final_acc, abs=1e-9)


def test_cache_flip_doubles_the_cached_vectors(source, digits, tmp_path, capsys):
    ft = FinetuneConfig(source=str(source), strategy="head", samples_per_class=5, cache_flip=True)
    finetune(ft, small_cfg(epochs=1), run_dir=tmp_path / "run", splits=digits)
    out = capsys.readouterr().out
    assert "head on cached features: 100 vectors of 84" in out  # 50 images and their mirrors


# --- frozen weights and BatchNorm buffers -----------------------------------------------------------


@pytest.fixture(scope="module")
def resnet_source(tmp_path_factory):
    """An untrained resnet20 checkpoint (1 channel, 10 classes) whose BatchNorm buffers are not 0 / 1."""
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_chans=1)
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(0.1 * torch.randn_like(buf))
        elif name.endswith("running_var"):
            buf.copy_(torch.rand_like(buf) + 0.5)
        elif name.endswith("num_batches_tracked"):
            buf.fill_(7)
    meta = {
        "format": "cnnzoo-checkpoint/1",
        "model": "resnet20",
        "model_kwargs": {},
        "classes": [str(i) for i in range(10)],
        "in_chans": 1,
        "image_size": 28,
        "mean": [0.1307],
        "std": [0.3081],
        "dataset": "mnist",
    }
    run = tmp_path_factory.mktemp("resnet") / "src"
    save_checkpoint(run, "best", model, meta)
    return run


@pytest.mark.parametrize("train_bn", [False, True])
def test_frozen_weights_and_batchnorm_buffers_stay_bit_identical(train_bn, resnet_source, digits, tmp_path):
    ft = FinetuneConfig(source=str(resnet_source), strategy="last:1", samples_per_class=4, train_bn=train_bn)
    cfg = small_cfg(model="resnet20", epochs=1, batch_size=20, lr=0.05)
    finetune(ft, cfg, run_dir=tmp_path / "run", quiet=True, splits=digits)
    before = load_file(str(resnet_source / "best.safetensors"))
    after = load_file(str(tmp_path / "run" / "last.safetensors"))
    model = create_model("resnet20", num_classes=10, in_chans=1)
    key_group = _group_of_key(model)
    bn_modules = {name for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert set(key_group.values()) == {"stem", "stage1", "stage2", "stage3", "head"}
    trainable = {"stage3", "head"}
    bn_buffers = ("running_mean", "running_var", "num_batches_tracked")
    checked = {"frozen": 0, "frozen_bn": 0, "trained": 0}
    for key, group in key_group.items():
        same = torch.equal(before[key], after[key])
        is_bn_param = key.rsplit(".", 1)[0] in bn_modules
        if group in trainable:
            assert not same, f"{key} ({group}) should have trained"
            checked["trained"] += 1
        elif key.endswith(bn_buffers) or (train_bn and is_bn_param):
            # frozen BatchNorm: inference mode by default; with train_bn it adapts (and its affine trains)
            assert same != train_bn, f"{key} ({group}): train_bn={train_bn}"
            checked["frozen_bn"] += 1
        else:
            assert same, f"{key} ({group}) is frozen but changed"
            checked["frozen"] += 1
    assert checked["frozen"] > 10 and checked["frozen_bn"] > 10 and checked["trained"] > 10


# --- per-group learning rates -------------------------------------------------------------------------


@pytest.fixture
def optimizers(monkeypatch):
    """Every optimizer `fit` builds, kept for inspection after the run."""
    engine = importlib.import_module("cnnzoo.engine.loop")  # where `fit` builds them
    built, original = [], engine.build_optimizer

    def spy(cfg, params):
        built.append(original(cfg, params))
        return built[-1]

    monkeypatch.setattr(engine, "build_optimizer", spy)
    return built


def _rates(optimizer) -> dict[str, float]:
    return {g["name"]: g["initial_lr"] for g in optimizer.param_groups}


@pytest.mark.parametrize(
    "strategy, lr_range, layer_decay, expected",
    [
        ("full", None, 0.5, {"conv1": 0.01 / 16, "conv2": 0.01 / 8, "fc1": 0.01 / 4, "fc2": 0.005, "head": 0.01}),
        ("full", (1e-4, 1e-2), None, {"conv1": 1e-4, "conv2": 1e-4 * 10**0.5, "fc1": 1e-3, "fc2": 1e-3 * 10**0.5, "head": 1e-2}),
        ("last:2", None, 0.1, {"fc1": 1e-4, "fc2": 1e-3, "head": 1e-2}),  # positions count, not trainable groups
        ("last:1", None, None, {"fc2": 1e-2, "head": 1e-2}),
        # gradual without a range: everything at lr/100 (stem) .. lr/10 (head) after the head phase
        ("gradual", None, None, {"conv1": 1e-4, "conv2": 1e-4 * 10**0.25, "fc1": 1e-4 * 10**0.5, "fc2": 1e-4 * 10**0.75, "head": 1e-3}),
        # gradual with a layer decay: the head at lr/10, each group before it x decay
        ("gradual", None, 0.5, {"conv1": 1e-3 / 16, "conv2": 1e-3 / 8, "fc1": 1e-3 / 4, "fc2": 5e-4, "head": 1e-3}),
    ],
)  # fmt: skip
def test_discriminative_rates_reach_the_optimizer(
    strategy, lr_range, layer_decay, expected, source, digits, tmp_path, optimizers
):
    ft = FinetuneConfig(
        source=str(source),
        strategy=strategy,
        lr_range=lr_range,
        layer_decay=layer_decay,
        samples_per_class=3,
        head_epochs=1,
    )
    finetune(ft, small_cfg(epochs=1, lr=0.01), quiet=True, save=False, splits=digits)
    assert len(optimizers) == 1
    rates = _rates(optimizers[0])
    assert rates.keys() == expected.keys()
    for name, rate in expected.items():
        assert rates[name] == pytest.approx(rate, rel=1e-9), name
    # the schedule scales every group by the same factor: the ratios between groups survive it
    factors = {g["lr"] / g["initial_lr"] for g in optimizers[0].param_groups}
    assert max(factors) == pytest.approx(min(factors), rel=1e-9)


@pytest.mark.parametrize("strategy", ["full", "gradual"])
def test_a_range_and_a_decay_together_are_refused_before_a_run_folder(strategy, source, digits, tmp_path):
    ft = FinetuneConfig(source=str(source), strategy=strategy, lr_range=(1e-4, 1e-2), layer_decay=0.5)
    with pytest.raises(CnnzooError, match="a learning-rate range or a layer decay, not both"):
        finetune(ft, small_cfg(), run_dir=tmp_path / "run", quiet=True, splits=digits)
    assert not (tmp_path / "run").exists()


def test_head_strategy_builds_no_engine_optimizer(source, digits, optimizers):
    finetune(FinetuneConfig(source=str(source), samples_per_class=3), small_cfg(epochs=1), quiet=True, save=False, splits=digits)  # fmt: skip
    assert optimizers == []  # the head trains on cached vectors, outside `fit`


# --- bad input through the command line ---------------------------------------------------------------


class _Payload:
    """Unpickling this would call `call(*args)`: a weights file must never be unpickled that way."""

    def __init__(self, call, args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _bad_inputs(tmp_path, source) -> dict[str, tuple[list[str], str]]:
    """case -> (finetune arguments, what the one error line must say)."""
    noise = tmp_path / "noise.pth"
    noise.write_bytes(os.urandom(4096))
    evil, marker = tmp_path / "evil.pth", tmp_path / "pwned"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Payload(open, (str(marker), "w"))}, evil)
    bare = tmp_path / "bare" / "lenet5.safetensors"  # the weights without their JSON: a bare file
    bare.parent.mkdir()
    shutil.copy(source / "best.safetensors", bare)
    one_class = tmp_path / "one-class" / "seven"
    one_class.mkdir(parents=True)
    for i in range(6):
        Image.new("L", (28, 28), color=40 * i).save(one_class / f"{i}.png")
    src = str(source)
    return {
        "too-many-groups": (["--from", src, "--strategy", "last:99"], "last:99 is too many for lenet5"),
        "unknown-strategy": (["--from", src, "--strategy", "bogus"], "unknown strategy 'bogus'"),
        "not-a-checkpoint": (["--from", str(noise)], "not a readable weights file"),
        "malicious-pickle": (["--from", str(evil)], "never unpickles"),
        "wrong-model-for-checkpoint": (
            ["--from", str(source / "best.safetensors"), "--model", "resnet18"],
            "--model resnet18 does not match",
        ),
        "wrong-model-for-weights": (["--from", str(bare), "--model", "resnet18"], "it looks like lenet5"),
        "one-class-folder": (
            ["--from", src, "--data", f"folder:{one_class.parent}"],
            "has only one class (seven)",
        ),
        "garbage-lr": (["--from", src, "--lr", "1e-2:garbage"], "bad learning rate '1e-2:garbage'"),
    }


@pytest.fixture(scope="module")
def cli_runs(source, tmp_path_factory):
    """Each bad command, run as a user would; in parallel, since most of each is starting Python."""
    tmp = tmp_path_factory.mktemp("bad")
    cases = _bad_inputs(tmp, source)
    # MNIST (vendored, no scikit-learn import) as the target: each command is refused before training
    base = [sys.executable, "-m", "cnnzoo", "finetune", "--data", "mnist", "--epochs", "1", "--quiet"]

    def run(item):
        name, (args, _) = item
        cmd = base + args + ["--samples-per-class", "2", "--out", str(tmp / "runs" / name)]
        return name, subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp)

    with ThreadPoolExecutor(4) as pool:
        results = dict(pool.map(run, cases.items()))
    return tmp, cases, results


@pytest.mark.parametrize(
    "case",
    [
        "too-many-groups",
        "unknown-strategy",
        "not-a-checkpoint",
        "malicious-pickle",
        "wrong-model-for-checkpoint",
        "wrong-model-for-weights",
        "one-class-folder",
        "garbage-lr",
    ],
)
def test_bad_input_is_one_line_and_exit_2(case, cli_runs):
    tmp, cases, results = cli_runs
    r, message = results[case], cases[case][1]
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnzoo: error: "), r.stderr
    assert message in lines[0]
    assert not (tmp / "runs" / case).exists()  # refused before anything was written
    if case == "malicious-pickle":
        assert not (tmp / "pwned").exists()


def test_malicious_pickle_is_not_a_pickle_for_cnnzoo(tmp_path):
    """The payload is real: plain `pickle.load` would run it (the test above shows cnnzoo does not)."""
    marker = tmp_path / "made"
    data = pickle.dumps(_Payload(open, (str(marker), "w")))
    pickle.loads(data).close()
    assert marker.exists()


def test_target_data_a_classifier_cannot_learn_is_refused(source, digits):
    only_zeros = Splits(digits.train.subset((digits.train.labels == 0).nonzero().flatten()), digits.test)
    with pytest.raises(CnnzooError, match="cover only 1 class"):
        finetune(FinetuneConfig(source=str(source)), small_cfg(), save=False, splits=only_zeros)
    too_few = Splits(digits.train.subset(torch.arange(5)), digits.test)
    with pytest.raises(CnnzooError, match="5 training images for 10 classes"):
        finetune(FinetuneConfig(source=str(source)), small_cfg(), save=False, splits=too_few)


# --- the one-call form and the run logs ----------------------------------------------------------------


def test_finetune_as_one_call_returns_the_model_and_writes_nothing(source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run folder would be runs/ here
    result = cnnzoo.finetune(
        str(source), data="digits", strategy="last:1", epochs=1, samples_per_class=5, quiet=True
    )
    assert list(tmp_path.iterdir()) == [] and result.run_dir is None
    assert not result.model.training and result.model.num_classes == 10 and len(result.history) == 1
    with pytest.raises(CnnzooError, match=r"cnnzoo.finetune: unknown option 'strategie'"):
        cnnzoo.finetune(str(source), data="digits", strategie="full")


def test_finetune_as_one_call_takes_a_rate_range_and_makes_a_run(source, tmp_path):
    run = tmp_path / "run"
    result = cnnzoo.finetune(
        str(source), data="digits", strategy="full", out=run, epochs=1, samples_per_class=5, lr=(1e-3, 1e-2)
    )
    assert result.run_dir == run and (run / "best.safetensors").exists()
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["finetune"]["lr_range"] == [1e-3, 1e-2] and recorded["train"]["lr"] == 1e-2


def test_head_only_run_logs_summary_and_tensorboard(source, digits, tmp_path):
    """The head strategy trains outside the engine's loop: the same per-epoch logs, its hyper-parameters."""
    ft = FinetuneConfig(source=str(source), strategy="head", samples_per_class=10)
    result = finetune(ft, small_cfg(epochs=3), run_dir=tmp_path / "run", quiet=True, splits=digits)
    with (tmp_path / "run" / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and float(rows[-1]["test_acc"]) == result.final_acc
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    from tensorboard.plugins.hparams import plugin_data_pb2

    ea = accumulator.EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    ea.Reload()
    assert [e.step for e in ea.Scalars("epoch/train_loss")] == [1, 2, 3]
    assert [(e.step, e.value) for e in ea.Scalars("final/test_acc")] == [(3, pytest.approx(result.final_acc))]
    assert ea.Images("predictions")[0].step == 3
    content = ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["finetune.strategy"].string_value == "head" and hparams["epochs"].number_value == 3


# --- last:N: the frozen groups run once, their outputs cached (engine/frozen.py) ------------------------


@pytest.mark.parametrize("strategy", ["last:1", "last:2"])
def test_last_n_with_the_prefix_cache_trains_as_without(strategy, source, digits, tmp_path, capsys):
    """Same batches, same steps: the cached run ends with the uncached run's weights and accuracy, and the
    checkpoint holds the whole network (it loads and evaluates on images)."""
    results = {}
    for cache in (True, False):
        ft = FinetuneConfig(source=str(source), strategy=strategy, samples_per_class=8, prefix_cache=cache)
        run = tmp_path / f"cache-{cache}"
        results[cache] = finetune(
            ft, small_cfg(epochs=3, augment="none"), run_dir=run, quiet=False, splits=digits
        )
        printed = capsys.readouterr().out
        assert ("frozen part run once" in printed) == cache
    cached, whole = results[True], results[False]
    assert abs(cached.final_acc - whole.final_acc) < 0.6  # a rounding may flip an image or two
    for (name, a), b in zip(
        cached.model.state_dict().items(), whole.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    on_disk = load_file(str(tmp_path / "cache-True" / "last.safetensors"))
    assert on_disk.keys() == whole.model.state_dict().keys()
    metrics, _ = evaluate_checkpoint(tmp_path / "cache-True" / "last.safetensors", "digits", device="cpu")
    assert metrics["accuracy"] == pytest.approx(cached.final_acc, abs=1e-6)  # the whole network, on images


def test_augmentation_turns_the_prefix_cache_off_with_a_note(source, digits, tmp_path, capsys):
    ft = FinetuneConfig(source=str(source), strategy="last:1", samples_per_class=4)
    finetune(ft, small_cfg(epochs=1, augment="crop=2"), run_dir=tmp_path / "run", quiet=False, splits=digits)
    printed = capsys.readouterr().out
    assert "no cache of the frozen part's outputs: augmentation is on (--augment crop=2" in printed
    assert "frozen part run once" not in printed
