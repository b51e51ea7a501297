"""Every kind of figure cnnzoo writes can be read: a title (on the figure and in the PNG's metadata), a
minimum size in pixels, and no text smaller than about 10 px at the saved resolution.

Each figure is inspected as `save_figure` receives it (the figure before saving), then read back from the
PNG it wrote.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from cnnzoo.artifacts import figure
from cnnzoo.engine import runlog

MIN_TEXT_PX = 10


@pytest.fixture
def seen(monkeypatch):
    """The figures passed to `save_figure` by the modules named, as (title, smallest text px, figure)."""
    found: list[dict] = []

    def watch(*modules):
        def spy(fig, path, *, title, **kwargs):
            out = figure.save_figure(fig, path, title=title, **kwargs)
            # after save_figure: the title is on it and the text as it was written
            found.append({"title": figure.figure_title(fig), "px": figure.smallest_text_px(fig), "fig": fig})
            return out

        for module in modules:
            monkeypatch.setattr(module, "save_figure", spy)
        return found

    return watch


def check_png(path: Path, *, min_size: tuple[int, int], title_has: str = "") -> str:
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.width >= min_size[0] and im.height >= min_size[1], (path.name, im.size)
        title = im.text.get("Title", "")
    assert title.strip(), f"{path.name} has no Title"
    assert title_has in title, (title, title_has)
    return title


def check_figures(found: list[dict], count: int) -> None:
    assert len(found) == count
    for f in found:
        assert f["title"].strip()
        assert f["px"] >= MIN_TEXT_PX, (f["title"], f["px"])


def test_readable_text_colour_contrasts_with_the_cell():
    assert figure.readable_text_colour((0.03, 0.19, 0.42, 1)) == "white"  # Blues' darkest
    assert figure.readable_text_colour((0.97, 0.98, 1.0, 1)) == "black"  # Blues' lightest


def test_save_figure_titles_raises_small_text_and_writes_metadata(tmp_path):
    fig, ax = figure.new_figure(4, 3)
    ax.plot([0, 1], [0, 1])
    ax.text(0.5, 0.5, "tiny", fontsize=4)
    ax.tick_params(labelsize=3)
    assert figure.smallest_text_px(fig) < MIN_TEXT_PX  # the check can fail
    figure.save_figure(fig, tmp_path / "f.png", title="a line")
    assert figure.figure_title(fig) == "a line" and figure.smallest_text_px(fig) >= MIN_TEXT_PX
    check_png(tmp_path / "f.png", min_size=(400, 300), title_has="a line")


def test_loss_and_accuracy_curves(tmp_path, seen):
    found = seen(runlog)
    records = [
        {
            "epoch": e,
            "train_loss": 2 / e,
            "test_loss": 1.5 / e,
            "train_acc": 50 + 10 * e,
            "test_acc": 55 + 9 * e,
        }
        for e in (1, 2, 3)
    ]
    written = runlog.plot_curves(
        records, tmp_path, name="lenet5 on mnist", label_smoothing=0.1, num_classes=10
    )
    assert [p.name for p in written] == ["loss.png", "accuracy.png"]
    check_figures(found, 2)
    loss_title = check_png(written[0], min_size=(600, 400), title_has="lenet5 on mnist")
    assert "loss" in loss_title and "accuracy" in check_png(written[1], min_size=(600, 400))
    ax = found[0]["fig"].axes[0]
    assert ax.get_xlabel() == "epoch" and "loss" in ax.get_ylabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("label smoothing 0.1" in t for t in legend)  # why train loss sits above test loss, said
    assert any("0.50" in t for t in legend)  # the floor smoothing puts under the train loss
    assert found[1]["fig"].axes[0].get_ylabel() == "accuracy (%)"


def test_smoothed_loss_floor():
    assert runlog.smoothed_loss_floor(0.0, 10) == 0
    assert runlog.smoothed_loss_floor(0.1, 10) == pytest.approx(0.5003, abs=1e-3)


def _luminance(rgb) -> float:
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a, b) -> float:
    """WCAG's contrast ratio of two colours (1 to 21; 4.5 is its minimum for body text)."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


@pytest.mark.parametrize("k", [3, 10])
def test_confusion_matrix_titled_with_a_colour_bar_and_readable_counts(tmp_path, seen, k):
    from matplotlib.colors import to_rgb

    from cnnzoo.engine import evaluate

    found = seen(evaluate)
    confusion = [[(900 + i if i == j else (i * 7 + j) % 5) for j in range(k)] for i in range(k)]
    classes = [f"class-{i}" for i in range(k)]
    path = evaluate.plot_confusion(confusion, classes, tmp_path / "c.png", title="m on d: accuracy 99.00%")
    check_figures(found, 1)
    check_png(path, min_size=(500, 400), title_has="accuracy 99.00%")
    fig = found[0]["fig"]
    ax, bar = fig.axes[0], fig.axes[1]  # the matrix, its colour bar
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert "test images" in bar.get_ylabel()
    image = ax.get_images()[0]
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    for i in range(k):
        cell = image.cmap(image.norm(confusion[i][i]))
        text = texts[(i, i)]
        assert text.get_text() == str(confusion[i][i])
        assert contrast(to_rgb(text.get_color()), cell) >= 4.5, (i, text.get_color(), cell)
    off = texts[(0, 1)]
    assert contrast(to_rgb(off.get_color()), image.cmap(image.norm(max(confusion[0][1], 1)))) >= 2


def test_explain_figures_titled_with_the_class_and_a_colour_bar(tmp_path, seen):
    import numpy as np

    import cnnzoo
    from cnnzoo.data import load_dataset
    from cnnzoo.explain import explain_images, figures

    found = seen(figures)
    predictor = cnnzoo.load("lenet5:mnist")
    digit = load_dataset("mnist").test.images[0, 0].numpy()  # a 7
    written = []
    for method in ("gradcam", "saliency", "filters"):
        written += explain_images(predictor, [np.asarray(digit)], method, tmp_path)
    check_figures(found, 3)
    for f, method in zip(found[:2], ("Grad-CAM", "saliency"), strict=True):
        assert method in f["title"] and "class '7'" in f["title"] and "p " in f["title"]
        assert any(ax.get_ylabel() for ax in f["fig"].axes[2:])  # the colour bar says what 0..1 means
    for path in written:
        check_png(path, min_size=(400, 200))
    # the overlay is clear where the map is cold: no colour over the background
    heat = next(im for im in found[0]["fig"].axes[1].get_images() if im.get_array().ndim == 3)
    rgba = np.asarray(heat.get_array())
    assert rgba[..., 3].min() == 0 and rgba[..., 3].max() > 0.5


def test_transfer_calibration_figure(tmp_path, seen):
    """The transfer study's grid figure (it was 691x223 px with ~6 px text), drawn from its committed results."""
    import json

    from cnnzoo.studies import transfer_report

    found = seen(transfer_report)
    results = json.loads((Path(__file__).parents[1] / "reports" / "transfer" / "results.json").read_text())
    grid = next(g for g in results["grids"] if g["name"] == "calibration")
    transfer_report._plot(grid, tmp_path / "calibration.png")
    check_figures(found, 1)
    check_png(tmp_path / "calibration.png", min_size=(1200, 400), title_has="calibration grid")
    for ax in found[0]["fig"].axes:
        assert (
            ax.get_title()
            and ax.get_xlabel() == "training images per class"
            and "accuracy" in ax.get_ylabel()
        )
    assert found[0]["fig"].legends  # one legend, for every panel


def test_pictures_of_the_errors(tmp_path, seen):
    """errors.png, confused_pairs.png and per_class.png from a made-up evaluation of 40 RGB images."""
    import torch

    from cnnzoo.data.base import ArrayDataset, DatasetInfo
    from cnnzoo.engine import mistakes

    found = seen(mistakes)
    classes = ["T-shirt/top", "Trouser", "Ankle boot"]
    info = DatasetInfo("made-up", tuple(classes), 32, 3, (0.5,) * 3, (0.25,) * 3)
    gen = torch.Generator().manual_seed(0)
    n = 40
    test = ArrayDataset(
        torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen), torch.arange(n) % 3, info
    )
    pred = torch.where(torch.arange(n) % 4 == 0, (test.labels + 1) % 3, test.labels)
    per_image = {
        "label": test.labels,
        "pred": pred,
        "loss": torch.rand(n, generator=gen) * 5,
        "prob_pred": torch.rand(n, generator=gen),
        "prob_true": torch.rand(n, generator=gen),
    }
    confusion = torch.zeros(3, 3, dtype=torch.long)
    confusion.index_put_((test.labels, pred), torch.ones(n, dtype=torch.long), accumulate=True)
    metrics = {"confusion": confusion.tolist(), "images": n, "accuracy": 75.0, "per_image": per_image}
    report = mistakes.error_report(metrics, classes)
    written = mistakes.write_error_pictures(metrics, report, test, classes, tmp_path, name="m on made-up")
    assert [p.name for p in written] == list(mistakes.PICTURES)
    check_figures(found, 3)
    check_png(written[0], min_size=(800, 300), title_has="most-wrong of 10 misclassified")
    check_png(written[1], min_size=(800, 300), title_has="most-confused class pairs")
    check_png(written[2], min_size=(600, 300), title_has="precision and recall")
    captions = [t.get_text() for t in found[0]["fig"].axes[0].texts]
    first = report["most_wrong"][0]
    assert (
        captions[0].startswith(f"true {first['true']}\npred {first['predicted']}") and "loss" in captions[0]
    )
