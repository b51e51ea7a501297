"""How an MNIST-like data set framed its images: numbers measured on its own training split.

A data set's registry entry (`cnnzoo.data.sources`) carries its `Framing`; `cnnzoo.inference.framing` does
the framing of a person's picture with it. Only the numbers live here, so a new data set states its framing
where it is registered, without a table to find in another package.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Framing"]


@dataclass(frozen=True)
class Framing:
    box: int  # the ink's longest side after fitting
    at: tuple[float, float]  # (row, column) where the centre goes, in pixel indices of the canvas
    centre: str = "mass"  # "mass" (MNIST's rule) or "box" (the ink's bounding box)
    canvas: int = 28

    def describe(self) -> str:
        return (
            f"cropped to the ink, fitted to {self.box}x{self.box} keeping its aspect ratio, centred by "
            f"{'mass' if self.centre == 'mass' else 'its box'} in {self.canvas}x{self.canvas}"
        )
