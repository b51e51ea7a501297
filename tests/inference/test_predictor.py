"""Prediction reproduces, to the image, what training and `cnnzoo evaluate` counted."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.data import load_dataset
from cnnzoo.engine import default_config, train
from cnnzoo.errors import CnnzooError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A short bf16-trained run (where the CPU has bf16): its reported figures are fp32 all the same."""
    path = tmp_path_factory.mktemp("run") / "lenet5"
    cfg = replace(default_config("lenet5", "mnist"), train_subset=2000, epochs=1, batch_size=64, lr=0.05)
    train(cfg, run_dir=path, quiet=True)
    return path


def test_metrics_say_which_precision_produced_them(run):
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["eval_precision"] == "fp32"
    assert json.loads((run / "last.json").read_text())["eval_precision"] == "fp32"


def test_evaluate_prints_exactly_what_the_run_recorded(run, capsys):
    recorded = json.loads((run / "last.json").read_text())["metrics"]["test_acc"]
    assert main(["evaluate", str(run / "last.safetensors"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == recorded  # equal, not approximately


def test_predict_on_png_files_agrees_with_evaluate(run, tmp_path):
    test = load_dataset("mnist").test
    n = 300
    paths = []
    for i in range(n):
        p = tmp_path / f"{i}.png"
        Image.fromarray(test.images[i, 0].numpy()).save(p)
        paths.append(str(p))
    predictor = cnnzoo.load(run / "last.safetensors")
    from_files = predictor.logits(predictor.preprocess(paths))
    # the evaluation path: the loader's batches, the model in eval mode, fp32
    from cnnzoo.data.base import Splits
    from cnnzoo.engine.evaluate import evaluate_checkpoint  # noqa: F401  (the path `evaluate` takes)
    from cnnzoo.engine.setup import make_loaders

    meta = predictor.meta
    splits = load_dataset("mnist")
    _, loader = make_loaders(
        Splits(splits.train, splits.test.subset(torch.arange(n))),
        batch_size=256, image_size=meta["image_size"], channels=1, mean=tuple(meta["mean"]),
        std=tuple(meta["std"]), augment="none", device=torch.device("cpu"), seed=0,
    )  # fmt: skip
    with torch.no_grad():
        from_loader = torch.cat([predictor.model(x) for x, _ in loader])
    assert torch.equal(from_files, from_loader)
    results = predictor.predict(paths[:5], top_k=2)
    assert [int(r["top"][0]["class"]) for r in results] == from_loader[:5].argmax(1).tolist()


def test_predictor_accepts_arrays_pil_tensors_and_bytes(run, tmp_path):
    test = load_dataset("mnist").test
    digit = test.images[0, 0].numpy()
    p = tmp_path / "d.png"
    Image.fromarray(digit).save(p)
    predictor = cnnzoo.load(run)
    sources = [str(p), p.read_bytes(), Image.fromarray(digit), digit, torch.from_numpy(digit), digit / 255.0]
    logits = predictor.logits(predictor.preprocess(sources))
    for row in logits[1:]:
        torch.testing.assert_close(row, logits[0])
    with pytest.raises(CnnzooError, match="image tensor"):
        predictor.preprocess([torch.zeros(1, 1, 1, 28, 28)])
    with pytest.raises(CnnzooError, match="image array"):
        predictor.preprocess([np.zeros((28, 28, 7), np.uint8)])
    with pytest.raises(CnnzooError, match="no images"):
        predictor.predict([])
