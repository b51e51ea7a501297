"""An export folder holding only model.onnx (+ config.json): cnnzoo predicts from it through onnxruntime, checks
its config against the graph, refuses what needs PyTorch weights in one line; the card describes the folder."""

import json
import re
import shutil

import pytest
import torch
from PIL import Image

import cnnzoo
from cnnzoo.artifacts.exported import OnnxModel
from cnnzoo.artifacts.source import read_source
from cnnzoo.cli import main
from cnnzoo.data import load_dataset
from cnnzoo.errors import CnnzooError
from cnnzoo.inference.export import export_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def onnx_only(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx_only")
    export_model("lenet5:mnist", root / "with_card", "onnx")
    bare = root / "bare"  # what the issue names: model.onnx + config.json, nothing else
    bare.mkdir()
    for name in ("model.onnx", "config.json"):
        shutil.copy(root / "with_card" / name, bare / name)
    return root


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    test = load_dataset("mnist").test
    paths = []
    for i in range(12):
        path = folder / f"{i}.png"
        Image.fromarray(test.images[i][0].numpy()).save(path)
        paths.append(str(path))
    return paths


def test_predict_from_an_onnx_only_folder_matches_pytorch(onnx_only, digits, capsys):
    predictor = cnnzoo.load(onnx_only / "bare")
    assert isinstance(predictor.model, OnnxModel) and predictor.framing is not None
    got, want = predictor.predict(digits, top_k=3), cnnzoo.load("lenet5:mnist").predict(digits, top_k=3)
    for a, b in zip(got, want, strict=True):
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
        for x, y in zip(a["top"], b["top"], strict=True):
            assert x["probability"] == pytest.approx(y["probability"], abs=1e-4)
    assert main(["predict", str(onnx_only / "bare"), *digits[:3], "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[1:]  # after the framing line
    assert [line.split(": ")[1].split()[0] for line in lines] == [w["top"][0]["class"] for w in want[:3]]


def test_its_config_is_checked_against_the_graph(onnx_only, tmp_path):
    for field, value in (("classes", [str(i) for i in range(11)]), ("in_chans", 3), ("image_size", 32)):
        folder = tmp_path / field
        shutil.copytree(onnx_only / "bare", folder)
        config = json.loads((folder / "config.json").read_text())
        config[field] = value
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(CnnzooError, match=f"field '{field}'"):
            cnnzoo.load(folder)


def test_what_needs_pytorch_weights_is_one_line(onnx_only, tmp_path, capsys):
    assert main(["export", str(onnx_only / "bare"), "--out", str(tmp_path / "x")]) == 2
    with pytest.raises(CnnzooError) as e:
        read_source(onnx_only / "bare")  # fine-tuning's and advice's reader
    for err in (capsys.readouterr().err.strip(), str(e.value)):
        assert "model.onnx" in err and "model.safetensors" in err and len(err.splitlines()) == 1


def _files_section(card: str) -> list[str]:
    section = card.split("## Files\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^- `([^`]+)`", section, re.M)


def test_the_card_describes_what_is_in_the_folder(onnx_only, tmp_path):
    export_model("lenet5:mnist", tmp_path / "weights", "safetensors")
    for folder in (onnx_only / "with_card", tmp_path / "weights"):
        card = (folder / "README.md").read_text()
        assert sorted(_files_section(card)) == sorted(p.name for p in folder.iterdir())
        has_onnx = (folder / "model.onnx").exists()
        assert ("| 32 |" in card) == has_onnx  # the parity table
        assert ("no ONNX file in this export" in card) != has_onnx
        assert ("model.safetensors" in card) == (folder / "model.safetensors").exists()
        assert ("onnxruntime" in card.split("## Files", 1)[1].split("## Parity")[0]) == has_onnx


def test_evaluation_runs_through_onnxruntime(onnx_only):
    from cnnzoo.engine.evaluate import evaluate_model

    opened = cnnzoo.load(onnx_only / "bare")
    x = torch.randn(5, 1, 28, 28)
    batches = [(x, torch.zeros(5, dtype=torch.long))]
    metrics = evaluate_model(opened.model, batches)
    assert metrics["images"] == 5 and 0 <= metrics["accuracy"] <= 100
