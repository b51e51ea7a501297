"""Every figure cnnzoo writes, in one style: a title, labelled axes, text legible at the saved size.

Figures are saved at `DPI` dots per inch, so a font of `s` points is `s * DPI / 72` pixels tall in the PNG;
`MIN_POINTS` keeps the smallest text (tick labels, cell counts, captions) at about 10 px, read without
zooming. `save_figure` is the one way out: it puts the title on the figure and into the PNG's `Title`
text chunk (so a test or a script can read what a file shows), raises any smaller text to the minimum,
and writes atomically (a failure leaves the previous file whole).

matplotlib is imported inside the functions: a command that draws nothing never pays for it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from .._io import atomic_write

__all__ = [
    "DPI",
    "MIN_POINTS",
    "SIZES",
    "pyplot",
    "new_figure",
    "label_axes",
    "save_figure",
    "smallest_text_px",
    "figure_title",
    "readable_text_colour",
]

DPI = 100
MIN_POINTS = 7.5  # 10.4 px at 100 dpi: the smallest text any figure keeps
SIZES = {"title": 12, "axes_title": 10.5, "label": 10, "tick": 9, "small": 8}  # points


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def new_figure(width: float, height: float, *, nrows: int = 1, ncols: int = 1, **kwargs):
    """(figure, axes) of `width` x `height` inches at `DPI`; `axes` is a 2-D array when nrows or ncols > 1,
    else one Axes."""
    plt = pyplot()
    squeeze = kwargs.pop("squeeze", True)
    return plt.subplots(nrows, ncols, figsize=(width, height), dpi=DPI, squeeze=squeeze, **kwargs)


def label_axes(ax, *, title: str | None = None, xlabel: str | None = None, ylabel: str | None = None) -> None:
    """An Axes' title and axis labels at the shared sizes (units belong in the labels: "accuracy (%)")."""
    if title is not None:
        ax.set_title(title, fontsize=SIZES["axes_title"])
    if xlabel is not None:
        ax.set_xlabel(xlabel, fontsize=SIZES["label"])
    if ylabel is not None:
        ax.set_ylabel(ylabel, fontsize=SIZES["label"])
    ax.tick_params(labelsize=SIZES["tick"])


def _texts(fig):
    from matplotlib.text import Text

    fig.draw_without_rendering()  # tick labels are made when the figure is drawn
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def smallest_text_px(fig) -> float:
    """Height in pixels, at the saved resolution, of the figure's smallest visible text."""
    return min((t.get_fontsize() * DPI / 72 for t in _texts(fig)), default=float("inf"))


def figure_title(fig) -> str:
    """The figure's title (its suptitle), or "" when it has none."""
    title = getattr(fig, "_suptitle", None)
    return title.get_text() if title is not None else ""


def readable_text_colour(rgba) -> str:
    """ "white" on a dark cell, "black" on a light one (by relative luminance, as WCAG defines it)."""

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(float(c)) for c in rgba[:3])
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    # the colour with the higher contrast ratio: black's is (L + .05) / .05, white's 1.05 / (L + .05)
    return "black" if (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) else "white"


def save_figure(fig, path: str | Path, *, title: str, rect=None) -> Path:
    """Title the figure, raise text below `MIN_POINTS`, lay it out, write the PNG (with `Title` in its
    metadata) atomically at `DPI`, and close the figure. `rect`: the part of the figure `tight_layout`
    may fill (room left for a legend below, say). A failed write is one `CnnzooError` naming the file."""
    fig.suptitle(title, fontsize=SIZES["title"])
    for text in _texts(fig):
        if text.get_fontsize() < MIN_POINTS:
            text.set_fontsize(MIN_POINTS)
    for ax in fig.axes:  # tick labels made at a later draw copy the axis' own setting
        for axis in (ax.xaxis, ax.yaxis):
            labels = axis.get_ticklabels()
            if labels and labels[0].get_fontsize() < MIN_POINTS:
                axis.set_tick_params(labelsize=MIN_POINTS)
    path = Path(path)
    try:
        with warnings.catch_warnings():  # a colour bar beside a grid of axes: laid out as well as it can be
            warnings.filterwarnings("ignore", message=".*not compatible with tight_layout")
            fig.tight_layout(rect=rect)
        atomic_write(
            path,
            lambda tmp: fig.savefig(
                tmp, format="png", dpi=DPI, metadata={"Title": title, "Software": "cnnzoo"}
            ),
        )
    finally:
        pyplot().close(fig)
    return path
