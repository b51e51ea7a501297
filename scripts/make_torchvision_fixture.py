"""Record torchvision's state-dict layout for every architecture cnnzoo shares with it.

This script is run once, by hand, in a side environment that has torchvision installed (CI never
installs torchvision). It writes ``tests/fixtures/torchvision_state_dicts.json``: for each model, the
ordered ``state_dict`` keys with their shapes, plus the torchvision and torch versions that produced
them. ``tests/test_torchvision_compat.py`` then checks cnnzoo's models against that file, so a
torchvision checkpoint loads into cnnzoo with ``strict=True``.

The exact command used (from the repository root; the side environment lives outside the repo):

    python3 -m venv /work/tvenv
    /work/tvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /work/tvenv/bin/pip install -e . --no-deps
    /work/tvenv/bin/python scripts/make_torchvision_fixture.py

Notes on the builder arguments:

- ``googlenet`` is built with ``aux_logits=False``: torchvision's *pretrained* GoogLeNet checkpoint
  has no auxiliary heads (``aux1``/``aux2``), so that is the layout worth matching.
- ``inception_v3`` is built with ``aux_logits=True``: its pretrained checkpoint keeps ``AuxLogits``.
- ``init_weights=False`` only skips torchvision's (slow) weight init; it does not change any shape.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torchvision
from torchvision import models

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "torchvision_state_dicts.json"

# name -> keyword arguments for torchvision's builder (weights=None is always added)
ARCHS: dict[str, dict] = {
    "alexnet": {},
    "vgg11": {},
    "vgg13": {},
    "vgg16": {},
    "vgg19": {},
    "vgg11_bn": {},
    "vgg13_bn": {},
    "vgg16_bn": {},
    "vgg19_bn": {},
    "googlenet": {"aux_logits": False, "init_weights": False},
    "inception_v3": {"aux_logits": True, "init_weights": False},
    "resnet18": {},
    "resnet34": {},
    "resnet50": {},
    "resnet101": {},
    "resnet152": {},
}


def build(name: str, kwargs: dict) -> torch.nn.Module:
    builder = getattr(models, name)
    try:
        with torch.device("meta"):  # no memory, no init cost
            return builder(weights=None, **kwargs)
    except Exception:  # pragma: no cover - fall back to a normal CPU build
        return builder(weights=None, **kwargs)


def record(name: str, kwargs: dict) -> dict:
    model = build(name, kwargs)
    return {
        "kwargs": kwargs,
        "state_dict": [[k, list(v.shape)] for k, v in model.state_dict().items()],
    }


def dump(data: dict) -> str:
    """JSON with one line per tensor: small to diff, easy to read."""
    lines = ["{"]
    lines.append(f'  "torchvision_version": {json.dumps(data["torchvision_version"])},')
    lines.append(f'  "torch_version": {json.dumps(data["torch_version"])},')
    lines.append('  "models": {')
    names = list(data["models"])
    for i, name in enumerate(names):
        entry = data["models"][name]
        lines.append(f"    {json.dumps(name)}: {{")
        lines.append(f'      "kwargs": {json.dumps(entry["kwargs"])},')
        lines.append('      "state_dict": [')
        rows = [f"        {json.dumps(row)}" for row in entry["state_dict"]]
        lines.append(",\n".join(rows))
        lines.append("      ]")
        lines.append("    }" + ("," if i < len(names) - 1 else ""))
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write (default: {OUT})")
    args = parser.parse_args()
    data = {
        "torchvision_version": torchvision.__version__,
        "torch_version": torch.__version__,
        "models": {name: record(name, kwargs) for name, kwargs in ARCHS.items()},
    }
    text = dump(data)
    assert json.loads(text) == json.loads(json.dumps(data))  # the hand-made layout is valid JSON
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    total = sum(len(m["state_dict"]) for m in data["models"].values())
    print(f"wrote {args.out}: {len(data['models'])} models, {total} tensors, {len(text)} bytes")


if __name__ == "__main__":
    main()
