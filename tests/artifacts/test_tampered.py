"""A tampered artifact is refused before use, with one line naming the field: every field of an export
folder's config.json, of a checkpoint's config and of a bundled manifest entry, checked against the weights."""

import json
import shutil

import pytest
from PIL import Image

import cnnzoo
from cnnzoo.artifacts.source import read_source
from cnnzoo.cli import main
from cnnzoo.errors import CnnzooError
from cnnzoo.inference.export import export_model
from cnnzoo.models import _pretrained


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tampered") / "lenet5"
    export_model("lenet5:mnist", out, "safetensors")
    return out


def _set(path, **changes):
    data = json.loads(path.read_text())
    for key, value in changes.items():
        *parents, last = key.split(".")
        target = data
        for p in parents:
            target = target[p]
        if value is _DROP:
            del target[last]
        else:
            target[last] = value
    path.write_text(json.dumps(data))


_DROP = object()
TEN = [str(i) for i in range(10)]

# (field named in the message, the change to config.json)
EXPORT_CASES = [
    ("model", {"model": "lenet6"}),  # no such network (with a suggestion)
    ("model", {"model": "resnet20"}),  # a network these weights are not
    ("model", {"model": 5}),
    ("model_kwargs", {"model_kwargs": {"depth": 3}}),
    ("model_kwargs", {"model_kwargs": [1]}),
    ("architecture", {"architecture": "resnet18"}),
    ("classes", {"classes": [*TEN, "10"]}),  # eleven names for ten outputs
    ("classes", {"classes": list(range(10))}),
    ("classes", {"classes": []}),
    ("num_classes", {"num_classes": 11}),
    ("label_names", {"label_names": TEN[::-1]}),
    ("in_chans", {"in_chans": 3}),
    ("in_chans", {"in_chans": 0}),
    ("image_size", {"image_size": 40}),  # LeNet-5 reads up to 32x32
    ("image_size", {"image_size": "28"}),
    ("input_shape", {"input_shape": ["batch", 1, 32, 32]}),
    ("mean", {"mean": [0.1, 0.2, 0.3]}),  # the issue's case: three values for one channel
    ("mean", {"mean": [2.0]}),
    ("mean", {"mean": ["x"]}),
    ("mean", {"mean": _DROP}),
    ("std", {"std": [0.0]}),
    ("std", {"std": [0.3, 0.3]}),
    ("pretrained_cfg", {"pretrained_cfg.mean": [0.5]}),
    ("pretrained_cfg", {"pretrained_cfg.input_size": [1, 32, 32]}),
    ("dataset", {"dataset": 7}),
    ("framing", {"framing.box": 40}),  # larger than its 28 px canvas
    ("framing", {"framing.centre": "middle"}),
    ("framing", {"framing": None}),  # MNIST's digits were framed: the config must say so
]


@pytest.mark.parametrize(
    "field, change", EXPORT_CASES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(EXPORT_CASES)]
)
def test_each_field_of_an_export_config_is_checked(export_dir, tmp_path, field, change):
    folder = tmp_path / "e"
    shutil.copytree(export_dir, folder)
    _set(folder / "config.json", **change)
    for opener in (cnnzoo.load, read_source):
        with pytest.raises(CnnzooError) as e:
            opener(folder)
        message = str(e.value)
        assert f"field {field!r}" in message and "config.json" in message and "\n" not in message


def test_the_untouched_export_and_the_issue_case_through_the_cli(export_dir, tmp_path, capsys):
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28)).save(image)
    assert main(["predict", str(export_dir), str(image)]) == 0
    capsys.readouterr()
    folder = tmp_path / "e"
    shutil.copytree(export_dir, folder)
    _set(folder / "config.json", mean=[0.1307] * 3)
    assert main(["predict", str(folder), str(image)]) == 2
    err = capsys.readouterr().err.strip()
    assert "field 'mean'" in err and "3 value(s)" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "field, change",
    [("mean", {"mean": [0.1, 0.2, 0.3]}), ("classes", {"classes": TEN[:9]}), ("in_chans", {"in_chans": 3})],
)
def test_a_checkpoints_config_is_checked_too(tmp_path, field, change):
    run = tmp_path / "run"
    run.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(
            _pretrained.pretrained_checkpoint("lenet5:mnist").with_suffix(suffix), run / f"best{suffix}"
        )
    _set(run / "best.json", **change)
    with pytest.raises(CnnzooError, match=f"best.json: field '{field}'"):
        cnnzoo.load(run)


@pytest.fixture
def assets(tmp_path, monkeypatch):
    """A copy of the bundled weights that the manifest reader uses instead of the package's."""
    folder = tmp_path / "pretrained"
    shutil.copytree(_pretrained.ASSETS, folder)
    monkeypatch.setattr(_pretrained, "ASSETS", folder)
    _pretrained._manifest_at.cache_clear()
    yield folder
    _pretrained._manifest_at.cache_clear()


ENTRY = "models.lenet5:mnist"
# (field named in the message, the file changed, the change): the entry against its config and the weights
MANIFEST_CASES = [
    ("model", "manifest.json", {f"{ENTRY}.model": "lenet5_1998"}),
    ("model", "manifest.json", {f"{ENTRY}.model": _DROP}),
    ("dataset", "manifest.json", {f"{ENTRY}.dataset": "fashion-mnist"}),
    ("accuracy", "manifest.json", {f"{ENTRY}.accuracy": 120}),
    ("accuracy", "manifest.json", {f"{ENTRY}.accuracy": "99"}),
    ("top5", "manifest.json", {f"{ENTRY}.top5": 50.0}),
    ("weights", "manifest.json", {f"{ENTRY}.weights": 3}),
    ("sha256", "manifest.json", {f"{ENTRY}.sha256": "abc"}),
    ("bytes", "manifest.json", {f"{ENTRY}.bytes": 12}),
    ("preprocessing.image_size", "manifest.json", {f"{ENTRY}.preprocessing.image_size": 32}),
    ("preprocessing.in_chans", "manifest.json", {f"{ENTRY}.preprocessing.in_chans": 3}),
    ("preprocessing.mean", "manifest.json", {f"{ENTRY}.preprocessing.mean": [0.1, 0.2, 0.3]}),
    ("preprocessing.std", "manifest.json", {f"{ENTRY}.preprocessing.std": [0.5]}),
    ("preprocessing.framing", "manifest.json", {f"{ENTRY}.preprocessing.framing": None}),
    ("preprocessing.framing", "manifest.json", {f"{ENTRY}.preprocessing.framing": 20}),
    ("recipe.model", "manifest.json", {f"{ENTRY}.recipe.model": "resnet20"}),
    ("recipe.data", "manifest.json", {f"{ENTRY}.recipe.data": "cifar10"}),
    ("command", "manifest.json", {f"{ENTRY}.command": None}),
    # the config beside the weights, against the weights
    ("mean", "lenet5-mnist.json", {"mean": [0.1307] * 3}),
    ("classes", "lenet5-mnist.json", {"classes": TEN[:9]}),
    ("in_chans", "lenet5-mnist.json", {"in_chans": 3}),
]


@pytest.mark.parametrize(
    "field, file, change", MANIFEST_CASES, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(MANIFEST_CASES)]
)
def test_each_field_of_a_bundled_entry_is_checked(assets, field, file, change):
    path = assets / file
    data = json.loads(path.read_text())
    for key, value in change.items():  # keys hold "lenet5:mnist", so split on the known prefix
        keys = (
            ["models", "lenet5:mnist", *key.removeprefix(ENTRY + ".").split(".")]
            if key.startswith(ENTRY)
            else [key]
        )
        target = data
        for k in keys[:-1]:
            target = target[k]
        if value is _DROP:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    path.write_text(json.dumps(data))
    for use in (
        lambda: cnnzoo.load("lenet5:mnist"),
        lambda: cnnzoo.create_model("lenet5", pretrained="mnist"),
    ):
        with pytest.raises(CnnzooError) as e:
            use()
        message = str(e.value)
        assert f"field {field!r}" in message and "\n" not in message


def test_the_untouched_bundled_copy_loads(assets):
    assert cnnzoo.load("lenet5:mnist").classes == TEN
