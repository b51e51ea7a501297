"""Drawn digits are read as well as MNIST's: 10 synthetic strokes of each digit, drawn as the page draws
them (white pen on a black 280x280 canvas) or as a person scans them (dark pen on white paper), framed as
MNIST was made (crop to the ink, fit 20x20, centre by mass in 28x28) and read right."""

import io
import math
import warnings

import numpy as np
from PIL import Image, ImageDraw

import cnnzoo
from cnnzoo.serve import ServeSettings, create_app

with warnings.catch_warnings():  # Starlette 1.x asks for httpx2 by a warning; httpx serves the same
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def _arc(cx, cy, rx, ry, start, end, n=24):
    """Points of an elliptical arc, angles in degrees (0 = right, 90 = down, as on a screen)."""
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
        for a in np.linspace(start, end, n)
    ]


# Each digit: strokes (lists of points in a unit square, y down), the way people commonly write them.
DIGITS = {
    0: [_arc(0.5, 0.5, 0.3, 0.42, -90, 275, 40)],
    1: [[(0.56, 0.08), (0.44, 0.92)]],
    2: [_arc(0.5, 0.32, 0.27, 0.22, 200, 380, 16) + [(0.7, 0.45), (0.22, 0.9), (0.82, 0.9)]],
    3: [_arc(0.48, 0.3, 0.26, 0.2, 210, 450, 20) + _arc(0.48, 0.7, 0.3, 0.2, 270, 500, 20)],
    4: [[(0.62, 0.08), (0.18, 0.62), (0.82, 0.62)], [(0.62, 0.08), (0.62, 0.94)]],
    5: [[(0.78, 0.1), (0.33, 0.1), (0.29, 0.46)] + _arc(0.5, 0.66, 0.29, 0.24, 220, 500, 24)],
    6: [
        [(0.68, 0.08)] + _arc(0.72, 0.62, 0.44, 0.54, 240, 180, 8) + _arc(0.5, 0.7, 0.22, 0.21, 180, 540, 32)
    ],
    7: [[(0.18, 0.12), (0.82, 0.12), (0.42, 0.92)]],
    8: [_arc(0.5, 0.28, 0.2, 0.19, 90, 450, 28) + _arc(0.5, 0.69, 0.25, 0.22, -90, 270, 28)],
    9: [_arc(0.48, 0.3, 0.22, 0.2, 0, 360, 28) + [(0.7, 0.32), (0.62, 0.94)]],
}


def draw_digit(digit: int, rng: np.random.Generator, *, dark_on_light: bool) -> bytes:
    """One person's version: slanted, rotated, scaled and shifted at random, in a pen 14 to 26 px wide."""
    size = 280
    angle = math.radians(rng.uniform(-8, 8))
    shear, scale = rng.uniform(-0.2, 0.2), rng.uniform(0.45, 0.7)
    reach = 0.55 * scale + 0.04  # half the digit's extent, slant and rotation included, plus the pen
    ox, oy = (rng.uniform(reach, 1 - reach) * size for _ in range(2))  # anywhere, but on the canvas
    scale *= size
    width = int(rng.integers(14, 27))
    ink, paper = (0, 255) if dark_on_light else (255, 0)
    im = Image.new("L", (size, size), paper)
    pen = ImageDraw.Draw(im)
    for stroke in DIGITS[digit]:
        pts = []
        for x, y in stroke:
            x, y = x - 0.5 + rng.normal(0, 0.012), y - 0.5 + rng.normal(0, 0.012)
            x = x - shear * y
            xr, yr = x * math.cos(angle) - y * math.sin(angle), x * math.sin(angle) + y * math.cos(angle)
            pts.append((ox + scale * xr, oy + scale * yr))
        pen.line(pts, fill=ink, width=width, joint="curve")
        for x, y in (pts[0], pts[-1]):  # round caps, as the page's pen has
            pen.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=ink)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_ten_synthetic_strokes_of_each_digit_are_read_right(lenet_source, tmp_path):
    predictor = cnnzoo.load(lenet_source)
    rng = np.random.default_rng(0)
    wrong = []
    with TestClient(create_app({"m": predictor}, ServeSettings())) as client:
        framing = client.get("/v1/models").json()["models"][0]["framing"]
        assert "20x20" in framing and "mass" in framing
        for digit in range(10):
            files = [
                ("file", (f"{digit}-{i}.png", draw_digit(digit, rng, dark_on_light=i % 2 == 1), "image/png"))
                for i in range(10)
            ]
            while client.get("/readyz").status_code != 200:
                pass
            r = client.post("/v1/models/m/predict/batch?top_k=1", files=files)
            assert r.status_code == 200, r.text
            for (_, (name, data, _)), p in zip(files, r.json()["predictions"], strict=True):
                if p["top"][0]["class"] != str(digit):
                    wrong.append(f"{name} read as {p['top'][0]['class']}")
                    (tmp_path / name).write_bytes(data)
    assert not wrong, f"{len(wrong)} of 100 misread (saved in {tmp_path}): {wrong}"
