"""Measure framing (`cnnzoo.inference.framing`) with the bundled LeNet-5 on the whole MNIST test set.

The pictures a new user makes of MNIST test digits: inverted (dark ink on white), inverted and enlarged to
280 px, small and off-centre on a white 200 px canvas. Each is read through `cnnzoo.load("lenet5:mnist")`
with framing (the default) and without (`fit=False`: the picture resized to 28x28). Prints the table in
tests/README.md. About 3 minutes on 2 cores.

    python scripts/measure_framing.py [--images N] [--source RUN]   # RUN: e.g. the run `make train` wrote
"""

import argparse

import numpy as np
from PIL import Image

import cnnzoo
from cnnzoo.data import load_dataset


def pictures(images: np.ndarray, seed: int = 0) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)

    def off_centre(a):
        canvas = np.full((200, 200), 255, np.uint8)
        y, x = rng.integers(0, 200 - 28, 2)
        canvas[y : y + 28, x : x + 28] = 255 - a
        return canvas

    return {
        "original MNIST": list(images),
        "inverted (dark on white)": [255 - a for a in images],
        "inverted, enlarged to 280 px": [
            np.asarray(Image.fromarray(255 - a).resize((280, 280), Image.BILINEAR)) for a in images
        ],
        "small, off-centre on a white 200 px canvas": [off_centre(a) for a in images],
    }


def accuracy(predictor, images: list[np.ndarray], labels: np.ndarray) -> float:
    correct = 0
    for i in range(0, len(images), 500):
        probs = predictor.probabilities(images[i : i + 500])
        correct += int((probs.argmax(1).numpy() == labels[i : i + 500]).sum())
    return 100 * correct / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="test images to use (default all)")
    parser.add_argument(
        "--source", default="lenet5:mnist", help="a run, checkpoint or bundled name (default lenet5:mnist)"
    )
    args = parser.parse_args()
    test = load_dataset("mnist").test
    images, labels = test.images[: args.images, 0].numpy(), test.labels[: args.images].numpy()
    framed, raw = cnnzoo.load(args.source), cnnzoo.load(args.source, fit=False)
    print(f"| pictures of {len(images):,} MNIST test digits | without framing | with framing (default) |")
    print("|---|---|---|")
    for name, pics in pictures(images).items():
        print(f"| {name} | {accuracy(raw, pics, labels):.2f}% | {accuracy(framed, pics, labels):.2f}% |")


if __name__ == "__main__":
    main()
