"""Pictures of the errors: precision/recall, confused pairs and most-wrong images, computed right, written by
`cnnzoo evaluate` (printed, in --json, as PNGs) for a training run, a fine-tuning run and an export folder."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cnnzoo.cli import main
from cnnzoo.engine.evaluate import evaluate_model
from cnnzoo.engine.mistakes import PICTURES, confused_pairs, error_report, most_wrong, precision_recall
from cnnzoo.inference.export import export_model

CONFUSION = [[8, 2, 0], [1, 5, 4], [0, 0, 0]]  # class 2 has no image and is never predicted


def test_precision_and_recall_by_hand():
    precision, recall = precision_recall(CONFUSION)
    assert precision[0] == pytest.approx(100 * 8 / 9) and precision[1] == pytest.approx(100 * 5 / 7)
    assert precision[2] == 0.0  # predicted 4 times, never right
    assert recall[0] == pytest.approx(80.0) and recall[1] == pytest.approx(50.0)
    assert recall[2] is None  # no test image of it


def test_confused_pairs_most_first_with_the_share_of_the_true_class():
    pairs = confused_pairs(CONFUSION, ["a", "b", "c"], top=10)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("b", "c", 4),
        ("a", "b", 2),
        ("b", "a", 1),
    ]
    assert pairs[0]["share_of_true"] == pytest.approx(40.0)


def test_most_wrong_are_the_misclassified_by_loss():
    per_image = {
        "label": torch.tensor([0, 1, 1, 0]),
        "pred": torch.tensor([0, 0, 1, 1]),
        "loss": torch.tensor([9.0, 1.5, 0.1, 2.5]),  # image 0 is right despite its loss: not an error
        "prob_pred": torch.tensor([0.4, 0.7, 0.9, 0.8]),
        "prob_true": torch.tensor([0.4, 0.2, 0.9, 0.08]),
    }
    worst = most_wrong(per_image, ["x", "y"], top=5)
    assert [w["index"] for w in worst] == [3, 1]
    assert worst[0] == {
        "index": 3,
        "true": "x",
        "predicted": "y",
        "probability": pytest.approx(0.8),
        "true_probability": pytest.approx(0.08),
        "loss": pytest.approx(2.5),
    }


def test_per_image_rows_match_the_loader():
    """evaluate_model's per-image losses are each image's cross-entropy, in the loader's order."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.randn(10, 1, 2, 2), torch.randint(0, 3, (10,))
    m = evaluate_model(model, [(x[:6], y[:6]), (x[6:], y[6:])], per_image=True)
    logits = model(x)
    expected = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    assert torch.allclose(m["per_image"]["loss"], expected.detach(), atol=1e-6)
    assert torch.equal(m["per_image"]["pred"], logits.argmax(1))
    assert math.isclose(m["per_image"]["loss"].mean().item(), m["loss"], rel_tol=1e-5)
    report = error_report(m, ["a", "b", "c"])
    assert report["misclassified"] == int((logits.argmax(1) != y).sum())
    assert len(report["most_wrong"]) == report["misclassified"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A one-epoch LeNet-5 run on 640 MNIST images, a fine-tuning of it on digits, and its export folder."""
    root = tmp_path_factory.mktemp("mistakes")
    args = ["train", "lenet5", "--train-subset", "640", "--batch-size", "64", "--epochs", "1", "--quiet"]
    assert main([*args, "--out", str(root / "run")]) == 0
    ft = [
        "finetune",
        "--from",
        str(root / "run"),
        "--data",
        "digits",
        "--strategy",
        "last:1",
        "--epochs",
        "1",
    ]
    assert main([*ft, "--quiet", "--out", str(root / "ft")]) == 0
    export_model(str(root / "run"), root / "exported", formats="safetensors")
    return root


@pytest.mark.parametrize("kind", ["run", "ft", "exported"])
def test_evaluate_writes_and_prints_the_pictures_of_the_errors(runs, kind, capsys):
    source = runs / kind
    assert main(["evaluate", str(source), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    k = len(result["classes"])
    assert len(result["precision"]) == len(result["recall"]) == k
    assert result["recall"] == pytest.approx(result["per_class"])  # recall is the per-class accuracy
    wrong = result["images"] - sum(result["confusion"][i][i] for i in range(k))
    assert result["misclassified"] == wrong > 0
    pair = result["confused_pairs"][0]
    names = [str(c) for c in result["classes"]]
    assert pair["count"] == result["confusion"][names.index(pair["true"])][names.index(pair["predicted"])]
    losses = [w["loss"] for w in result["most_wrong"]]
    assert losses == sorted(losses, reverse=True) and all(
        w["true"] != w["predicted"] for w in result["most_wrong"]
    )
    folder = source / "evaluation"
    assert result["pictures"] == {p.removesuffix(".png"): str(folder / p) for p in PICTURES}
    assert all((folder / p).stat().st_size > 0 for p in PICTURES)

    if kind != "run":
        return
    assert main(["evaluate", str(source)]) == 0  # the printout: once is enough
    out = capsys.readouterr().out
    assert (
        "precision  recall  images" in out
        and "most-confused pairs" in out
        and "most-wrong test images" in out
    )
    assert f"pictures of the errors: {folder / 'errors.png'}" in out


def test_other_data_and_errors_dir_and_bundled(runs, tmp_path, capsys):
    """Other --data goes to evaluation-DATA/; --errors-dir chooses; bundled weights write none unless told."""
    assert main(["evaluate", str(runs / "run"), "--data", "digits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pictures"]["errors"] == str(
        runs / "run" / "evaluation-digits" / "errors.png"
    )
    assert main(["evaluate", str(runs / "run"), "--data", "digits", "--errors-dir", str(tmp_path / "e")]) == 0
    assert f"pictures of the errors: {tmp_path / 'e' / 'errors.png'}" in capsys.readouterr().out
    assert main(["evaluate", "lenet5:mnist", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pictures"] == {}
