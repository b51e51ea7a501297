"""`cnnzoo lr-find --from SRC --data D --strategy S`: the sweep on the network fine-tuning would train."""

import math

import pytest
import torch
from safetensors.torch import load_file

from cnnzoo.cli import main
from cnnzoo.engine.config import TrainConfig
from cnnzoo.transfer.finetune import FinetuneConfig
from cnnzoo.transfer.lr_find import finetune_lr_find


@pytest.mark.parametrize("strategy", ["head", "last:1", "full"])
def test_finetune_sweep_leaves_the_source(source, digits, strategy, tmp_path):
    before = load_file(str(source / "last.safetensors"))
    ft = FinetuneConfig(source=str(source), strategy=strategy, samples_per_class=10)
    cfg = TrainConfig(model="lenet5", data="digits", batch_size=16, lr=0.01, augment="none")
    result = finetune_lr_find(ft, cfg, splits=digits, png=tmp_path / "lr.png", start_lr=1e-5, steps=40)
    assert math.isfinite(result.suggestion) and 1e-5 <= result.suggestion <= 10
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
    after = load_file(str(source / "last.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_lr_find_from_command(source, tmp_path, capsys):
    png = tmp_path / "lr_find.png"
    args = ["lr-find", "--from", str(source), "--data", "digits", "--strategy", "last:1", "--lr", "0.001:0.01",
            "--samples-per-class", "10", "--steps", "40", "--out", str(png)]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    rate = float(next(line for line in out if line.startswith("suggested learning rate")).split()[3])
    # the range keeps its ratio: the stem a tenth of the head's suggested rate
    assert f"--strategy last:1 --lr {rate / 10:.3g}:{rate:.3g}" in out[-1]
    assert png.is_file()
