"""The accuracy recipes README quotes, run end to end (several minutes on 2 cores).

    python bench/bench_recipes.py              # all three
    python bench/bench_recipes.py default      # one of: default, distortions, fashion

default      `cnnzoo train lenet5 --data mnist` as shipped             goal >= 99.2%
distortions  20 epochs with LeCun-style affine distortions              goal >= 99.3% (paper: 99.2%)
fashion      LeNet-5 on Fashion-MNIST, 20 epochs, crop and flip         goal >= 91% in under 10 minutes
"""

from __future__ import annotations

import sys
import tempfile

from cnnzoo.engine import default_config, train

RECIPES = {
    "default": (default_config("lenet5", "mnist"), 99.2),
    "distortions": (default_config("lenet5", "mnist", epochs=20, augment="affine"), 99.3),
    "fashion": (default_config("lenet5", "fashion-mnist", epochs=20, augment="crop=2,flip"), 91.0),
}


def main(names: list[str]) -> None:
    for name in names or list(RECIPES):
        cfg, goal = RECIPES[name]
        with tempfile.TemporaryDirectory() as run_dir:
            result = train(cfg, run_dir=run_dir, quiet=True)
        verdict = "met" if result.final_acc >= goal else "NOT met"
        print(
            f"{name:<12} {cfg.epochs} epochs, batch {cfg.batch_size}, augment {cfg.augment!r}: "
            f"{result.final_acc:.2f}% in {result.seconds:.0f} s (goal {goal}%: {verdict})",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
