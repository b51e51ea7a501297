"""StreamingLoader: an image folder too large for memory, read by worker processes with InMemoryLoader's
order, shards and per-batch work; and `cnnzoo train` on folders, streamed or in memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import cnnzoo.data.sources as sources
import cnnzoo.data.stream as stream
import cnnzoo.engine.setup as setup
from cnnzoo.cli import main
from cnnzoo.data.augment import AugmentConfig
from cnnzoo.data.base import ArrayDataset
from cnnzoo.data.folder import CorruptImageWarning, StreamingFolder, load_folder
from cnnzoo.data.loader import InMemoryLoader
from cnnzoo.data.stream import StreamingLoader
from cnnzoo.errors import CnnzooError

CLASSES, PER_CLASS, SIZE = ("ant", "bee", "cat"), 12, 16


def make_folder(root: Path, classes=CLASSES, per_class=PER_CLASS) -> Path:
    """Random 16x16 RGB PNGs, every one different, so pixels identify an image."""
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(
                root / name / f"{i}.png"
            )
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = make_folder(tmp_path_factory.mktemp("images"))
    (root / "bee" / "broken.png").write_bytes(b"not a png")
    return root


@pytest.fixture(scope="module")
def splits(folder):
    with pytest.warns(CorruptImageWarning, match="broken.png"):
        return load_folder(folder, max_memory_bytes=1, progress=False)


@pytest.fixture(scope="module")
def in_memory(folder):
    with pytest.warns(CorruptImageWarning):
        return load_folder(folder, progress=False)


def raw(data: StreamingFolder, batch_size: int, **kw) -> StreamingLoader:
    """A loader whose x are the stored 0..255 pixel values (mean 0, std 1/255)."""
    return StreamingLoader(data, batch_size, mean=(0.0,) * 3, std=(1 / 255,) * 3, **kw)


def identify(data: StreamingFolder):
    """Pixels -> index into `data`."""
    index = {data[i][0].numpy().tobytes(): i for i in range(len(data))}
    return lambda x: [index[img.round().to(torch.uint8).numpy().tobytes()] for img in x]


def epoch(loader, ident) -> list[list[int]]:
    return [ident(x) for x, _ in loader]


def test_streams_a_folder_over_the_memory_budget(splits):
    assert isinstance(splits.train, StreamingFolder) and isinstance(splits.test, StreamingFolder)
    assert len(splits.train) + len(splits.test) == len(CLASSES) * PER_CLASS  # the broken file is left out
    assert all("broken" not in p for p in splits.train.paths + splits.test.paths)


def test_every_sample_once_per_epoch_in_a_seeded_order(splits):
    data, ident = splits.train, identify(splits.train)
    loader = raw(data, 7, seed=3, num_workers=2)
    assert len(loader) == 5 and loader.num_samples == len(data) == 30
    first = epoch(loader, ident)
    assert sorted(i for batch in first for i in batch) == list(range(30))
    assert [len(b) for b in first] == [7, 7, 7, 7, 2]
    second = epoch(loader, ident)  # no set_epoch: moves on by itself
    assert sorted(i for batch in second for i in batch) == list(range(30)) and second != first
    loader.set_epoch(0)
    assert epoch(loader, ident) == first
    loader.set_epoch(1)
    assert epoch(loader, ident) == second
    assert epoch(raw(data, 7, seed=3, num_workers=0), ident) == first  # no workers: the same order
    assert epoch(raw(data, 7, seed=4, num_workers=0), ident) != first
    in_order = raw(data, 7, shuffle=False, num_workers=0)
    assert sum(epoch(in_order, ident), []) == list(range(30))


def test_batches_shapes_labels_and_normalisation(splits):
    data = splits.test
    x, y = next(iter(StreamingLoader(data, 4, shuffle=False, num_workers=0)))
    assert x.shape == (4, 3, SIZE, SIZE) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(y, data.labels[:4])
    images = torch.stack([data[i][0] for i in range(4)]).float() / 255
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (data.info.mean, data.info.std))
    torch.testing.assert_close(x, (images - mean) / std)
    gray, _ = next(
        iter(StreamingLoader(data, 4, channels=1, image_size=24, channels_last=True, num_workers=0))
    )
    assert gray.shape == (4, 1, 24, 24) and gray.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    "kw",
    [
        dict(augment=AugmentConfig(crop_padding=2, flip=True, cutout=4)),
        dict(augment=AugmentConfig(affine=True), channels=1, image_size=32),
        dict(image_size=12, channels_last=True),
    ],
)
def test_same_batches_as_in_memory(splits, in_memory, kw):
    """Same images, seed and arguments: the same batches, augmentation and statistics included."""
    assert isinstance(in_memory.train, ArrayDataset) and splits.train.paths == in_memory.train.paths
    streamed = StreamingLoader(splits.train, 8, seed=5, num_workers=2, **kw)
    held = InMemoryLoader(in_memory.train, 8, seed=5, **kw)
    assert streamed.mean == held.mean and streamed.std == held.std and len(streamed) == len(held)
    for e in (0, 1):
        streamed.set_epoch(e)
        held.set_epoch(e)
        for (xs, ys), (xh, yh) in zip(streamed, held, strict=True):
            assert torch.equal(xs, xh) and torch.equal(ys, yh)


def test_two_ranks_together_take_one_global_batch(splits):
    data, ident = splits.train, identify(splits.train)
    ranks = [raw(data, 4, seed=7, rank=r, world_size=2, num_workers=1) for r in range(2)]
    single = raw(data, 8, seed=7, num_workers=0)
    assert len(ranks[0]) == len(ranks[1]) == len(single) == 4
    for r0, r1, whole in zip(*(epoch(loader, ident) for loader in (*ranks, single)), strict=True):
        assert r0 + r1 == whole and abs(len(r0) - len(r1)) <= 1  # last: 6 samples, 3 each


def test_dataset_without_info_measures_its_statistics():
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    data = [(img, i % 2) for i, img in enumerate(images)]
    loader = StreamingLoader(data, 5, shuffle=False, num_workers=0)
    mean = images.float().div(255).mean((0, 2, 3))
    torch.testing.assert_close(torch.tensor(loader.mean), mean, atol=1e-3, rtol=0)
    x, y = next(iter(loader))
    assert x.shape == (5, 3, 8, 8) and y.tolist() == [0, 1, 0, 1, 0] and loader.image_size == 8


def test_bad_arguments():
    data = [(torch.zeros(3, 8, 8, dtype=torch.uint8), 0)] * 4
    with pytest.raises(CnnzooError, match="rank must be"):
        StreamingLoader(data, 2, rank=1, mean=(0,) * 3, std=(1,) * 3)
    with pytest.raises(CnnzooError, match="cannot pad 8x8 images to 4x4"):
        StreamingLoader(data, 2, image_size=4, resize_mode="pad", mean=(0,) * 3, std=(1,) * 3)
    with pytest.raises(CnnzooError, match="num_workers"):
        StreamingLoader(data, 2, num_workers=-1, mean=(0,) * 3, std=(1,) * 3)


def test_file_broken_after_loading_is_one_clear_error(tmp_path):
    splits = load_folder(make_folder(tmp_path, per_class=4), max_memory_bytes=1, progress=False)
    victim = splits.train.paths[3]
    Path(victim).write_bytes(b"junk")
    loader = StreamingLoader(splits.train, 2, shuffle=False, num_workers=2)
    with pytest.raises(CnnzooError, match="cannot decode image") as caught:
        list(loader)
    assert victim in str(caught.value) and "Traceback" not in str(caught.value)
    assert "\n" not in str(caught.value)


# --- cnnzoo train on a folder ---------------------------------------------------------------------------


@pytest.fixture
def force_streaming(monkeypatch):
    """`load_dataset("folder:...")` streams whatever the folder's size; counts StreamingLoaders made."""
    load = sources.load_folder
    monkeypatch.setattr(
        sources, "load_folder", lambda path, **kw: load(path, **{**kw, "max_memory_bytes": 1})
    )
    made = []

    class Counted(StreamingLoader):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            made.append(self)

    monkeypatch.setattr(stream, "StreamingLoader", Counted)
    monkeypatch.setattr(setup, "StreamingLoader", Counted)  # where the engine's loader factory names it
    return made


def train_cli(folder: Path, out: Path, *extra: str) -> int:
    args = ["train", "lenet5", "--data", f"folder:{folder}", "--epochs", "1", "--batch-size", "8"]
    return main([*args, "--device", "cpu", "--quiet", "--out", str(out), *extra])


@pytest.mark.filterwarnings("ignore::cnnzoo.data.folder.CorruptImageWarning")
def test_train_streamed_equals_train_in_memory(folder, tmp_path, monkeypatch, force_streaming, capsys):
    assert train_cli(folder, tmp_path / "streamed") == 0
    assert len(force_streaming) == 2  # train and test
    monkeypatch.undo()  # back to the in-memory path: the folder is small
    assert train_cli(folder, tmp_path / "in-memory") == 0
    a = load_file(str(tmp_path / "streamed" / "last.safetensors"))
    b = load_file(str(tmp_path / "in-memory" / "last.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the very same batches
    assert "test accuracy" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore::cnnzoo.data.folder.CorruptImageWarning")
def test_resume_mid_epoch_when_streaming(folder, tmp_path, monkeypatch, force_streaming):
    assert train_cli(folder, tmp_path / "straight", "--epochs", "2") == 0
    original_iter, seen = StreamingLoader.__iter__, [0]

    def interrupting_iter(self):
        for batch in original_iter(self):
            if self.shuffle:
                seen[0] += 1
                if seen[0] == 6:  # mid-way through epoch 2 (4 batches of 8 per epoch)
                    raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(StreamingLoader, "__iter__", interrupting_iter)
    assert train_cli(folder, tmp_path / "resumed", "--epochs", "2") == 130
    monkeypatch.setattr(StreamingLoader, "__iter__", original_iter)
    assert main(["train", "--resume", str(tmp_path / "resumed"), "--quiet"]) == 0
    a = load_file(str(tmp_path / "straight" / "last.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "last.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_train_stops_with_one_line_when_a_streamed_image_breaks(tmp_path, force_streaming, capsys):
    root = tmp_path / "split"
    make_folder(root / "train", per_class=4)
    make_folder(root / "val", per_class=2)
    victim = root / "val" / "bee" / "1.png"
    victim.write_bytes(victim.read_bytes()[:60])  # header intact, pixel data cut off: found when read
    assert train_cli(root, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnzoo: error: cannot decode image") and str(victim) in err
    assert "\n" not in err and "Traceback" not in err


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cnnzoo", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("case", ["all corrupt", "one class"])
def test_unusable_folder_is_exit_2_with_one_line(tmp_path, case):
    if case == "all corrupt":
        for name in CLASSES:
            (tmp_path / "data" / name).mkdir(parents=True)
            (tmp_path / "data" / name / "0.png").write_bytes(b"junk")
        expected = "3 unreadable image file(s)"
    else:
        make_folder(tmp_path / "data", classes=("ant",), per_class=3)
        expected = "has only one class (ant)"
    result = run_cli(
        "train", "lenet5", "--data", f"folder:{tmp_path / 'data'}", "--out", str(tmp_path / "run")
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnzoo: error:") and expected in lines[0], result.stderr
    assert not (tmp_path / "run").exists()
