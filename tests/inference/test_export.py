"""`cnnzoo export`: one folder, every file checked, nothing half-written on failure."""

import json
import shutil

import numpy as np
import pytest
import torch

import cnnzoo
from cnnzoo.artifacts import exported as export_reader
from cnnzoo.cli import main
from cnnzoo.engine import TrainConfig
from cnnzoo.errors import CnnzooError
from cnnzoo.inference import export
from cnnzoo.models._pretrained import pretrained_checkpoint

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The bundled LeNet-5 exported in all three formats, through the command line."""
    out = tmp_path_factory.mktemp("exports") / "lenet5"
    assert (
        main(["export", "lenet5:mnist", "--format", "onnx,torchscript,safetensors", "--out", str(out)]) == 0
    )
    return out


def test_the_folder_holds_every_file_and_the_card_holds_the_figures(exported):
    assert sorted(p.name for p in exported.iterdir()) == [
        "README.md", "config.json", "model.onnx", "model.pt", "model.safetensors",
    ]  # fmt: skip
    config = json.loads((exported / "config.json").read_text())
    assert config["model"] == "lenet5" and config["classes"] == [str(i) for i in range(10)]
    assert config["in_chans"] == 1 and config["image_size"] == 28 and config["mean"] == [0.1307]
    assert config["versions"]["torch"] == torch.__version__ and config["framing"]["box"] == 20
    card = (exported / "README.md").read_text()
    for needle in ("99.45%", "| 1 |", "| 32 |", "100.0%", "torch.jit.load", "onnxruntime", "mnist"):
        assert needle in card
    assert not list(exported.parent.glob(".*partial*"))


def test_onnx_opset_dynamic_batch_and_parity(exported):
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(exported / "model.onnx"))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    reference = cnnzoo.load("lenet5:mnist").model
    for n in (1, 7):
        x = torch.randn(n, 1, 28, 28)
        (out,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(out), reference(x), rtol=1e-4, atol=1e-4)


def test_the_export_folder_loads_as_a_predictor(exported):
    a, b = cnnzoo.load(exported), cnnzoo.load("lenet5:mnist")
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(a.model(x), b.model(x), rtol=0, atol=0)
    assert a.framing == b.framing and a.classes == b.classes


def test_a_registered_format_is_written_checked_and_on_the_card(tmp_path):
    """The extension point: one `ExportFormat` registered, and `export_model` writes it, checks it and puts
    its loading snippet on the card; unregistered, it is an unknown format again."""

    def write(model, path, x):
        np.savez(path, **{k: v.numpy() for k, v in model.state_dict().items()})

    def check(model, path, x, report):
        with np.load(path) as saved:
            same = sorted(saved.files) == sorted(model.state_dict())
        report.checks.append(f"npz: every tensor saved: {same}")

    def snippet(config, out):
        return ["import numpy as np", 'weights = np.load("weights.npz")']

    export.register_format(export.ExportFormat("npz", "weights.npz", write, check, snippet))
    try:
        assert export.parse_formats("npz, safetensors") == ["npz", "safetensors"]
        report = export.export_model("lenet5:mnist", tmp_path / "out", ["npz", "safetensors"])
    finally:
        export.unregister_format("npz")
    assert report.files == ["config.json", "model.safetensors", "weights.npz", "README.md"]
    assert report.checks[-1] == "npz: every tensor saved: True"
    card = (tmp_path / "out" / "README.md").read_text()
    assert '```python\nimport numpy as np\nweights = np.load("weights.npz")\n```\n' in card
    assert "- npz: every tensor saved: True" in card and "model.onnx" not in card
    with pytest.raises(CnnzooError, match="unknown export format 'npz'"):
        export.parse_formats("npz")
    assert export.FORMATS == ("onnx", "torchscript", "safetensors")


def test_the_reader_lives_in_artifacts_and_is_re_exported():
    assert export.is_export_folder is export_reader.is_export_folder
    assert export.load_export is export_reader.load_export


def test_from_a_checkpoint_one_format(tmp_path):
    ckpt = tmp_path / "run" / "best.safetensors"
    ckpt.parent.mkdir()
    shutil.copy(pretrained_checkpoint("lenet5:fashion-mnist"), ckpt)
    shutil.copy(pretrained_checkpoint("lenet5:fashion-mnist").with_suffix(".json"), ckpt.with_suffix(".json"))
    report = export.export_model(ckpt.parent, tmp_path / "out", "safetensors")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    assert report.parity == [] and "round trip" in report.checks[0]


def test_the_card_says_when_a_run_trained_on_a_subset(tmp_path):
    """The recipe line names what changes what was learned (a 3,000-image run is not a full one)."""
    run = tmp_path / "run"
    run.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(pretrained_checkpoint("lenet5:fashion-mnist").with_suffix(suffix), run / f"best{suffix}")
    recipe = TrainConfig(model="lenet5", data="fashion-mnist", train_subset=3000, label_smoothing=0.1)
    (run / "config.json").write_text(json.dumps(recipe.to_dict()))
    export.export_model(run, tmp_path / "out", "safetensors")
    line = next(
        x for x in (tmp_path / "out" / "README.md").read_text().splitlines() if x.startswith("- recipe:")
    )
    assert "train_subset 3000" in line and "label_smoothing 0.1" in line and "grad_clip" not in line


@pytest.mark.parametrize(
    "args, message",
    [
        (["lenet5:mnist", "--format", "onnx,tflite"], "unknown export format 'tflite'"),
        (["lenet5:nope"], "no bundled weights named"),
        (["no/such/run"], "not found"),
    ],
)
def test_bad_input_is_one_line(args, message, tmp_path, capsys):
    assert main(["export", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".*"))


def test_corrupt_checkpoint_and_unwritable_out(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    shutil.copy(pretrained_checkpoint("lenet5:mnist").with_suffix(".json"), bad.with_suffix(".json"))
    assert main(["export", str(bad), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unreadable" in err and len(err.splitlines()) == 1 and not (tmp_path / "a").exists()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["export", "lenet5:mnist", "--format", "safetensors", "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot write the export" in err and len(err.splitlines()) == 1
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["export", "lenet5:mnist", "--out", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_a_failed_parity_check_says_by_how_much_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(export.onnx, "TOLERANCE", 0.0)  # any float difference now fails
    assert main(["export", "lenet5:mnist", "--format", "onnx", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "ONNX parity check failed" in err and "max |diff|" in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_torchscript_loads_in_a_python_that_never_imports_cnnzoo(exported, tmp_path):
    import subprocess
    import sys

    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, torch\n"
        "y = torch.jit.load(sys.argv[1])(torch.load(sys.argv[2]))\n"
        "torch.save(y.detach(), sys.argv[3])\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'cnnzoo'], 'cnnzoo was imported'\n"
    )
    args = [sys.executable, "-I", "-c", code, str(exported / "model.pt"), "x.pt", "y.pt"]
    subprocess.run(args, cwd=tmp_path, check=True, timeout=300)
    with torch.no_grad():
        reference = cnnzoo.load("lenet5:mnist").model(x)
    got = torch.load(tmp_path / "y.pt")
    torch.testing.assert_close(got, reference, rtol=0, atol=1e-5 * reference.abs().max().item())
    assert (
        "torch.jit.load in a Python process without cnnzoo gives the same logits"
        in (exported / "README.md").read_text()
    )


# --- the folder is also a Hugging Face Hub / timm model folder -------------------------------------
# (timm itself loads it in tests/test_timm_compat.py, run by `make test-peers`)


def test_config_carries_timms_keys_beside_cnnzoos(exported):
    config = json.loads((exported / "config.json").read_text())
    assert config["model"] == "lenet5" and config["model_kwargs"] == {} and config["in_chans"] == 1
    assert config["architecture"] == "cnnzoo/lenet5"  # timm has no LeNet-5: it says so, by name
    assert config["num_classes"] == 10 and config["num_features"] == 16 and config["global_pool"] == "avg"
    assert config["label_names"] == config["classes"] == [str(i) for i in range(10)]
    assert config["pretrained_cfg"] == {
        "input_size": [1, 28, 28], "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center",
        "mean": [0.1307], "std": [0.3081], "num_classes": 10, "pool_size": [5, 5],
        "first_conv": "features.1", "classifier": "classifier.4",
    }  # fmt: skip


def test_the_card_opens_with_the_hubs_metadata(exported):
    card = (exported / "README.md").read_text()
    head, body = card.split("\n---\n", 1)
    assert head.splitlines() == [
        "---", "library_name: cnnzoo", "tags:", "- image-classification", "- cnnzoo", "- lenet",
        "pipeline_tag: image-classification", "license: mit", 'datasets:', '- "mnist"', "metrics:", "- accuracy",
    ]  # fmt: skip
    assert body.lstrip().startswith("# lenet5 trained on mnist")


def test_the_cards_torch_hub_snippet_runs(exported):
    """The card's lines for a network timm lacks: torch.hub from a checkout (this one), the weights file."""
    from pathlib import Path

    card = (exported / "README.md").read_text()
    block = card[card.index("# timm has no lenet5") :].split("```")[0]
    repo = Path(__file__).resolve().parents[2]
    scope: dict = {}
    exec(block.replace("path/to/cnnzoo", str(repo)), scope)  # noqa: S102 (our own card)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(scope["model"].eval()(x), cnnzoo.load("lenet5:mnist").model(x))


def test_vgg_weights_go_under_timms_names_and_come_back():
    """timm's VGG head: pre_logits.fc1 a 7x7 convolution, fc2 a 1x1 one, head.fc; cnnzoo maps them back.
    Above a 7x7 map timm computes another function: cnnzoo's names stay, and so does the name."""
    from cnnzoo.inference.export import hub
    from cnnzoo.models._weights import map_timm_names

    torch.manual_seed(0)
    model = cnnzoo.create_model("vgg11", num_classes=5)
    ours = model.state_dict()
    theirs = hub.timm_state_dict(model, 224)
    assert theirs["pre_logits.fc1.weight"].shape == (4096, 512, 7, 7)
    assert theirs["pre_logits.fc2.weight"].shape == (4096, 4096, 1, 1) and theirs["head.fc.weight"].shape == (
        5,
        4096,
    )
    assert not [k for k in theirs if k.startswith("classifier.")]
    back = map_timm_names(theirs)
    assert list(back) == list(ours) and all(torch.equal(back[k], ours[k]) for k in ours)
    assert hub.timm_architecture(model, 224) == "vgg11" and hub.timm_architecture(model, 256) is None
    assert list(hub.timm_state_dict(model, 256)) == list(ours)


def test_inception_v3_leaves_out_its_training_only_head(tmp_path):
    """timm's Inception v3 has no auxiliary classifier: the folder neither, and says so to cnnzoo's reader."""
    from cnnzoo.artifacts.checkpoint import save_checkpoint
    from cnnzoo.artifacts.source import read_source

    torch.manual_seed(0)
    model = cnnzoo.create_model("inception_v3", num_classes=3).eval()
    meta = dict(model="inception_v3", model_kwargs={}, classes=["a", "b", "c"], in_chans=3, image_size=75,
                mean=[0.5] * 3, std=[0.5] * 3)  # fmt: skip
    out = tmp_path / "out"
    export.export_model(save_checkpoint(tmp_path / "run", "best", model, meta), out, "safetensors")
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "inception_v3" and config["model_kwargs"] == {"aux_logits": False}
    assert config["pretrained_cfg"]["first_conv"] == "Conv2d_1a_3x3.conv"
    state = read_source(out).state  # what fine-tuning from the folder reads
    assert not [k for k in state if k.startswith("AuxLogits")] and "fc.weight" in state
    x = torch.randn(2, 3, 75, 75)
    with torch.no_grad():
        assert torch.equal(cnnzoo.load(out).model(x), model(x))
    assert "timm.create_model('local-dir:" in (out / "README.md").read_text()
