"""Data augmentation on a whole batch at once, on whatever device the batch is on.

Every function takes a float batch (B, C, H, W) and a `torch.Generator`, draws one set of random numbers
per image, and transforms the whole batch with a few tensor operations: no Python loop over images, no PIL.
The same generator state gives the same batch, so a seeded run is reproducible. The geometric ones fill
what comes in from outside the image with 0, which is black when they run before normalisation (as
`InMemoryLoader` does).

    random_crop          pad, then shift each image by its own offset (one gather)   [Krizhevsky 2012]
    random_flip          mirror a random half of the images (one torch.where)
    random_affine        rotation, scale, shear and translation per image (one grid_sample): the
                         distortions of LeCun et al. 1998 and Simard et al. 2003
    random_resized_crop  a random box of random area and aspect ratio, resized to the output
                         (Szegedy et al. 2015, "Inception" cropping)
    cutout               a square of zeros at a random place per image (DeVries and Taylor 2017)

`AugmentConfig` says which to apply; `augment_batch` (or `BatchAugment`) applies them in a fixed order:
resized crop, affine, crop, flip, cutout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from cnnzoo.errors import CnnzooError

__all__ = [
    "AugmentConfig",
    "BatchAugment",
    "augment_batch",
    "affine_grid",
    "random_crop",
    "random_flip",
    "random_affine",
    "random_resized_crop",
    "cutout",
]


# --- random numbers, drawn where the generator lives and moved to the batch ---------------------------------


def _rand(shape: tuple[int, ...], gen: torch.Generator | None, device: torch.device) -> Tensor:
    if gen is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=gen, device=gen.device).to(device, non_blocking=True)


def _randint(high: int, shape: tuple[int, ...], gen: torch.Generator | None, device: torch.device) -> Tensor:
    if gen is None:
        return torch.randint(high, shape, device=device)
    return torch.randint(high, shape, generator=gen, device=gen.device).to(device, non_blocking=True)


def _uniform(lo: float, hi: float, n: int, gen: torch.Generator | None, device: torch.device) -> Tensor:
    return _rand((n,), gen, device) * (hi - lo) + lo


# --- the transforms ---------------------------------------------------------------------------------------


def affine_grid(theta: Tensor, height: int, width: int) -> Tensor:
    """Same as `F.affine_grid(theta, (B, C, height, width), align_corners=False)`, several times faster on
    CPU (two broadcast multiply-adds instead of a batched matmul). theta (B, 2, 3) -> grid (B, H, W, 2)."""
    ys = (torch.arange(height, device=theta.device, dtype=theta.dtype) * 2 + 1) / height - 1
    xs = (torch.arange(width, device=theta.device, dtype=theta.dtype) * 2 + 1) / width - 1
    t = theta[:, :, :, None, None]  # (B, 2, 3, 1, 1)
    grid = t[:, :, 0] * xs + t[:, :, 1] * ys[:, None] + t[:, :, 2]  # (B, 2, H, W): input x and y
    return grid.permute(0, 2, 3, 1)


def _sample(x: Tensor, theta: Tensor, height: int, width: int) -> Tensor:
    grid = affine_grid(theta.to(x.dtype), height, width)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_crop(
    x: Tensor, padding: int, gen: torch.Generator | None = None, *, mode: str = "constant"
) -> Tensor:
    """Pad by `padding` on every side, then cut each image's own H x W window (offsets 0..2*padding).

    One gather over the flattened padded images. `mode` is F.pad's: "constant" (zeros) or "reflect"
    (airbench pads CIFAR by reflection).
    """
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    p = padding
    padded = F.pad(x, (p, p, p, p), mode=mode)  # (B, C, H+2p, W+2p)
    wide = w + 2 * p
    offset = _randint(2 * p + 1, (2, b), gen, x.device)  # row and column offset of each image's window
    rows = offset[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offset[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    index = (rows[:, :, None] * wide + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return padded.flatten(2).gather(2, index).view(b, c, h, w)


def random_flip(x: Tensor, gen: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """Mirror each image left-right with probability `p`."""
    mask = _rand((x.shape[0],), gen, x.device) < p
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def random_affine(
    x: Tensor,
    gen: torch.Generator | None = None,
    degrees: float = 10.0,
    scale: tuple[float, float] = (0.9, 1.1),
    shear: float = 10.0,
    translate: float = 0.1,
) -> Tensor:
    """Rotate by U(-degrees, degrees), scale by U(scale), shear horizontally by U(-shear, shear) degrees and
    shift by U(-translate, translate) of the image size, each image its own, about the image centre."""
    b, _, h, w = x.shape
    dev = x.device
    angle = torch.deg2rad(_uniform(-degrees, degrees, b, gen, dev))
    s = _uniform(scale[0], scale[1], b, gen, dev)
    k = torch.tan(torch.deg2rad(_uniform(-shear, shear, b, gen, dev)))
    tx, ty = (
        _uniform(-translate, translate, b, gen, dev) * 2,
        _uniform(-translate, translate, b, gen, dev) * 2,
    )
    # 1. forward map in pixel units about the centre: M = s * R(angle) @ [[1, k], [0, 1]]
    cos, sin = torch.cos(angle), torch.sin(angle)
    m00, m01, m10, m11 = s * cos, s * (cos * k - sin), s * sin, s * (sin * k + cos)
    # 2. its inverse (det = s^2), then into normalised coordinates: D^-1 M^-1 D with D = diag(w/2, h/2)
    det = s * s
    i00, i01, i10, i11 = m11 / det, -m01 / det * (h / w), -m10 / det * (w / h), m00 / det
    # 3. grid: input = inverse @ (output - shift); shifts are already normalised (fraction * 2)
    theta = torch.stack(
        [
            torch.stack([i00, i01, -(i00 * tx + i01 * ty)], 1),
            torch.stack([i10, i11, -(i10 * tx + i11 * ty)], 1),
        ],
        1,
    )  # (B, 2, 3)
    return _sample(x, theta, h, w)


def random_resized_crop(
    x: Tensor,
    gen: torch.Generator | None = None,
    out_size: int | tuple[int, int] | None = None,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Tensor:
    """Cut a box covering U(scale) of each image's area with aspect ratio (w/h) log-uniform in `ratio`, at
    a random place, and resize it to `out_size` (default: the input size). A box that would be wider or
    taller than the image is clipped to it (no rejection loop)."""
    b, _, h, w = x.shape
    oh, ow = (h, w) if out_size is None else (out_size, out_size) if isinstance(out_size, int) else out_size
    dev = x.device
    area = _uniform(scale[0], scale[1], b, gen, dev)
    r = torch.exp(_uniform(math.log(ratio[0]), math.log(ratio[1]), b, gen, dev))
    bw = torch.sqrt(area * r * h / w).clamp(max=1.0)  # box width as a fraction of the image width
    bh = torch.sqrt(area / r * w / h).clamp(max=1.0)
    cx = (_rand((b,), gen, dev) * 2 - 1) * (1 - bw)  # box centre, normalised, box kept inside the image
    cy = (_rand((b,), gen, dev) * 2 - 1) * (1 - bh)
    zero = torch.zeros_like(bw)
    theta = torch.stack([torch.stack([bw, zero, cx], 1), torch.stack([zero, bh, cy], 1)], 1)
    return _sample(x, theta, oh, ow)


def cutout(x: Tensor, gen: torch.Generator | None = None, size: int = 8) -> Tensor:
    """Zero a size x size square centred at a random pixel of each image (it may hang over the edge)."""
    if size <= 0:
        return x
    b, _, h, w = x.shape
    centre = torch.stack([_randint(h, (b,), gen, x.device), _randint(w, (b,), gen, x.device)])
    top, left = centre[0] - size // 2, centre[1] - size // 2
    ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    inside_y = (ys >= top[:, None]) & (ys < top[:, None] + size)  # (B, H)
    inside_x = (xs >= left[:, None]) & (xs < left[:, None] + size)  # (B, W)
    hole = inside_y[:, None, :, None] & inside_x[:, None, None, :]  # (B, 1, H, W)
    return x.masked_fill(hole, 0.0)


# --- configuration --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations to apply to each training batch. The default applies none."""

    crop_padding: int = 0  # random crop after padding this many pixels; 2 for 28px digits, 4 for CIFAR
    flip: bool = False  # left-right mirror; only where it keeps the label (objects, not characters)
    affine: bool = False  # LeCun's distortions: rotation, scale, shear, shift, one draw per image
    degrees: float = 10.0  # affine rotation range ±degrees; digits tolerate ~15 before 6 looks like 9
    scale: tuple[float, float] = (0.9, 1.1)  # affine zoom range; ±10% keeps strokes inside a 28px frame
    shear: float = 10.0  # affine horizontal shear range ±degrees, like slanted handwriting
    translate: float = 0.1  # affine shift range, fraction of the image size
    resized_crop: bool = False  # Inception-style random box (35-100% of the area), resized back
    cutout: int = 0  # side of a square zeroed at a random place; 8-16 for 32px images

    def __post_init__(self):
        if self.crop_padding < 0 or self.cutout < 0:
            raise CnnzooError(
                f"crop and cutout take sizes >= 0, got crop={self.crop_padding} cutout={self.cutout}"
            )
        if not (0 < self.scale[0] <= self.scale[1]):
            raise CnnzooError(f"affine scale must be a range lo:hi with 0 < lo <= hi, got {self.scale}")
        if self.degrees < 0 or self.shear < 0 or not 0 <= self.translate <= 1:
            raise CnnzooError("affine degrees and shear must be >= 0 and translate in [0, 1]")

    @property
    def enabled(self) -> bool:
        return bool(self.crop_padding or self.flip or self.affine or self.resized_crop or self.cutout)

    @classmethod
    def parse(cls, spec: str | None) -> AugmentConfig:
        """Read a command-line string: "crop=2,flip,affine,degrees=15,scale=0.8:1.2,cutout=8", or "none".

        Flags are `flip`, `affine`, `resized_crop` (alias `rrc`), each also as key=0/1. Giving an affine
        range (degrees, scale, shear, translate) turns affine on.
        """
        if spec is None or spec.strip().lower() in ("", "none", "off"):
            return cls()
        values: dict[str, object] = {}
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            key, _, value = item.partition("=")
            key = _ALIASES.get(key.strip().lower(), key.strip().lower())
            if key not in _PARSERS:
                known = ", ".join(sorted(set(_PARSERS) | set(_ALIASES)))
                raise CnnzooError(f"unknown augmentation {key!r} in {spec!r}; known: {known}")
            values[key] = _PARSERS[key](key, value.strip())
            if key in ("degrees", "scale", "shear", "translate"):
                values.setdefault("affine", True)
        return cls(**values)

    def spec(self) -> str:
        """The shortest string `parse` turns back into this config ("none" for no augmentation)."""
        default, parts = AugmentConfig(), []
        for f in fields(self):
            value = getattr(self, f.name)
            if value == getattr(default, f.name):
                continue
            name = _SPEC_NAMES.get(f.name, f.name)
            if isinstance(value, bool):
                parts.append(name if value else f"{name}=0")
            elif isinstance(value, tuple):
                parts.append(f"{name}={value[0]:g}:{value[1]:g}")
            else:
                parts.append(f"{name}={value:g}")
        return ",".join(parts) or "none"


def _flag(key: str, value: str) -> bool:
    if value.lower() in ("", "1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise CnnzooError(f"{key} is a flag: write {key} or {key}=0, not {key}={value}")


def _number(kind: type):
    def read(key: str, value: str):
        try:
            return kind(value)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise CnnzooError(f"{key} needs {what}, as in {key}={kind(2)}; got {value!r}") from None

    return read


def _range(key: str, value: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value.split(":"))
    except ValueError:
        raise CnnzooError(f"{key} needs a range lo:hi, as in {key}=0.9:1.1; got {value!r}") from None
    return (lo, hi)


_PARSERS = {
    "crop_padding": _number(int),
    "flip": _flag,
    "affine": _flag,
    "degrees": _number(float),
    "scale": _range,
    "shear": _number(float),
    "translate": _number(float),
    "resized_crop": _flag,
    "cutout": _number(int),
}
_ALIASES = {"crop": "crop_padding", "rrc": "resized_crop"}
_SPEC_NAMES = {"crop_padding": "crop"}


# --- applying a config ----------------------------------------------------------------------------------


def augment_batch(x: Tensor, cfg: AugmentConfig, gen: torch.Generator | None = None) -> Tensor:
    """Apply what `cfg` enables, in this order: resized crop, affine, crop, flip, cutout.

    Geometry first (so the crop's and affine's zero borders are what the model sees at the edges), the
    mirror after, and cutout last so its square is never rotated or shifted out of the image.
    """
    if cfg.resized_crop:
        x = random_resized_crop(x, gen)
    if cfg.affine:
        x = random_affine(x, gen, cfg.degrees, cfg.scale, cfg.shear, cfg.translate)
    if cfg.crop_padding:
        x = random_crop(x, cfg.crop_padding, gen)
    if cfg.flip:
        x = random_flip(x, gen)
    if cfg.cutout:
        x = cutout(x, gen, cfg.cutout)
    return x


class BatchAugment:
    """`augment_batch` with its config bound: `BatchAugment(cfg)(x, gen)`."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg

    def __call__(self, x: Tensor, gen: torch.Generator | None = None) -> Tensor:
        return augment_batch(x, self.cfg, gen)

    def __repr__(self) -> str:
        return f"BatchAugment({self.cfg.spec()})"
