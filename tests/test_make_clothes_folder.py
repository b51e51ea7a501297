"""scripts/make_clothes_folder.py writes the mixed folder it describes, in the layout folder: reads."""

import importlib.util
from pathlib import Path

import pytest
from PIL import Image

from cnnzoo.data import load_dataset
from cnnzoo.data.sources import SYSTEM_FASHION_DIR

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not SYSTEM_FASHION_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_clothes_folder_has_every_format_size_and_mode(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_clothes_folder", ROOT / "scripts/make_clothes_folder.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    counts = script.make_folder(tmp_path / "a", per_class=12, test_per_class=3)
    assert counts == dict.fromkeys(["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"], 20)
    files = sorted(p for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 120 and len(list((tmp_path / "a" / "test").rglob("*.*"))) == 30
    formats, modes, sides = set(), set(), set()
    for path in files:
        with Image.open(path) as im:
            formats.add(im.format)
            modes.add(im.mode)
            assert im.width == im.height and 28 <= im.width <= 90
            sides.add(im.width)
    assert formats == set(counts) and "RGB" in modes and "L" in modes and len(sides) > 20
    splits = load_dataset(f"folder:{tmp_path / 'a'}", progress=False)
    assert (len(splits.train), len(splits.test), splits.info.num_classes) == (90, 30, 10)
    # seeded: the same folder again, byte for byte
    script.make_folder(tmp_path / "b", per_class=12, test_per_class=3)
    assert all(p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes() for p in files)
