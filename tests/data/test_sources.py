"""The dataset registry: vendored MNIST, Fashion-MNIST from Debian, downloads with checksums (served from
local files), the CIFAR binary format on tiny written tarballs, scikit-learn digits."""

import dataclasses
import hashlib
import io
import re
import sys
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnzoo.data import sources
from cnnzoo.data.base import Splits
from cnnzoo.data.framing import Framing
from cnnzoo.data.idx import write_idx
from cnnzoo.data.sources import (
    dataset_augment,
    dataset_framing,
    dataset_framings,
    describe_dataset,
    download_file,
    list_datasets,
    load_dataset,
    parse_cifar,
)
from cnnzoo.errors import CnnzooError


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache, so nothing on this machine leaks in."""
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def mnist() -> Splits:
    return load_dataset("mnist")


def write_mnist_like(folder: Path, n_train=12, n_test=5, classes=10, suffix=".gz", seed=0):
    """Four small IDX files with MNIST's names; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % classes).astype(np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels)
        arrays[split] = (images, labels)
    return arrays


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def serve(monkeypatch, files: dict[str, bytes]):
    """Replace the network: `_open_url` answers from `files`, keyed by URL; returns the list of URLs asked."""
    asked = []

    def fake_open_url(url):
        asked.append(url)
        if url not in files:
            raise urllib.error.URLError("no route to host")
        return io.BytesIO(files[url]), len(files[url])

    monkeypatch.setattr(sources, "_open_url", fake_open_url)
    return asked


# --- registry ------------------------------------------------------------------------------------------


def test_list_and_describe():
    assert list_datasets() == [
        "cifar10", "cifar100", "digits", "fashion-mnist",
        "glyphs-cyrillic", "glyphs-digits", "glyphs-greek", "glyphs-latin", "kmnist", "mnist",
    ]  # fmt: skip
    for name in list_datasets():
        assert describe_dataset(name)
    assert "sub-folder" in describe_dataset("folder:/x")


def test_unknown_name_lists_known_and_suggests():
    with pytest.raises(CnnzooError, match=r"unknown dataset 'mnsit'.*kmnist, mnist, folder:PATH.*'mnist'\?"):
        load_dataset("mnsit")


def test_each_entry_states_its_augmentation_and_framing():
    # the values engine/config.py and inference/framing.py held in tables by name before the registry did
    framings = {
        "mnist": Framing(20, (14.0, 14.0), "mass"),
        "fashion-mnist": Framing(27, (13.5, 13.8), "box"),
        "digits": Framing(28, (13.5, 13.9), "box"),
        "glyphs-digits": Framing(22, (13.5, 13.6), "box"),
        "glyphs-latin": Framing(15, (12.5, 13.5), "box"),
        "glyphs-cyrillic": Framing(15, (14.3, 13.5), "box"),
        "glyphs-greek": Framing(19, (13.5, 13.6), "box"),
    }
    flipped = {"cifar10": "crop=4,flip", "cifar100": "crop=4,flip", "fashion-mnist": "crop=2,flip"}
    for name in list_datasets():
        assert dataset_augment(name) == flipped.get(name, "none"), name
        assert dataset_framing(name) == framings.get(name), name
    assert dataset_framings() == framings
    assert dataset_augment("folder:/x") == "rrc,flip" and dataset_framing("folder:/x") is None
    assert (
        dataset_augment("nope") == "none"
        and dataset_framing("nope") is None
        and dataset_framing(None) is None
    )


def test_a_new_dataset_is_one_registry_entry():
    """Registering a data set is one `_register(...)`: the training recipe (engine) and the framing of
    pictures (inference) read its augmentation and framing from the entry; no table elsewhere to edit."""
    from cnnzoo.engine.config import default_config
    from cnnzoo.inference.framing import FRAMINGS, framing_for

    framing = Framing(18, (13.0, 14.0), "box")
    sources._register("test-letters", "a data set of this test", 28, augment="crop=2", framing=framing)(
        lambda data_dir, download, progress: None
    )
    try:
        assert "test-letters" in list_datasets()
        assert default_config("lenet5", "test-letters").augment == "crop=2"
        assert framing_for("test-letters") is framing and FRAMINGS["test-letters"] is framing
    finally:
        del sources._REGISTRY["test-letters"]
    assert default_config("lenet5", "test-letters").augment == "none"
    assert framing_for("test-letters") is None and "test-letters" not in FRAMINGS


def test_image_size_is_for_folders_only():
    with pytest.raises(CnnzooError, match="mnist images are 28x28"):
        load_dataset("mnist", image_size=32)


def test_empty_folder_path():
    with pytest.raises(CnnzooError, match="folder: needs a path"):
        load_dataset("folder:")


# --- MNIST (vendored) ----------------------------------------------------------------------------------


def test_mnist_shapes_labels_counts(mnist):
    assert mnist.train.images.shape == (60000, 1, 28, 28) and mnist.train.images.dtype == torch.uint8
    assert mnist.test.images.shape == (10000, 1, 28, 28)
    assert mnist.train.labels.dtype == torch.int64
    assert torch.bincount(mnist.train.labels).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    assert torch.bincount(mnist.test.labels).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    assert int(mnist.train.images.max()) == 255 and int(mnist.train.images.min()) == 0


def test_mnist_info(mnist):
    info = mnist.info
    assert info.classes == tuple("0123456789") and info.num_classes == 10
    assert (info.image_size, info.channels, info.flip) == (28, 1, False)
    assert "LeCun" in info.source
    # the well-known normalisation constants, recomputed here from the training split
    x = mnist.train.images.double() / 255
    assert info.mean == (0.1307,) and info.std == (0.3081,)
    assert abs(x.mean().item() - 0.1307) < 1e-4 and abs(x.std().item() - 0.3081) < 1e-4


def test_mnist_assets_match_attribution():
    folder = sources.ASSETS / "mnist"
    text = (folder / "ATTRIBUTION.md").read_text()
    assert "CC BY-SA 3.0" in text
    listed = dict((name, digest) for digest, name in re.findall(r"^([0-9a-f]{32})  (\S+\.gz)$", text, re.M))
    assert len(listed) == 4
    for name, digest in listed.items():
        assert md5((folder / name).read_bytes()) == digest, name


def test_mnist_from_data_dir(tmp_path):
    arrays = write_mnist_like(tmp_path / "m", suffix="")
    splits = load_dataset("mnist", data_dir=tmp_path / "m")
    assert torch.equal(splits.train.images[:, 0], torch.from_numpy(arrays["train"][0]))
    assert splits.test.labels.tolist() == arrays["t10k"][1].tolist()


# --- Fashion-MNIST ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not sources.SYSTEM_FASHION_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_from_debian():
    splits = load_dataset("fashion-mnist")
    assert splits.train.images.shape == (60000, 1, 28, 28) and splits.test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(splits.train.labels).tolist() == [6000] * 10
    info = splits.info
    assert info.classes[0] == "T-shirt/top" and info.classes[-1] == "Ankle boot" and info.flip
    assert info.mean == (0.286,) and info.std == (0.353,)


def test_fashion_mnist_missing_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "SYSTEM_FASHION_DIR", tmp_path / "usr-share")
    with pytest.raises(CnnzooError) as caught:
        load_dataset("fashion-mnist")
    message = str(caught.value)
    assert str(tmp_path / "usr-share") in message
    assert str(tmp_path / "cache" / "fashion-mnist") in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message


def test_fashion_mnist_data_dir_with_dot_idx_spelling(tmp_path):
    folder = tmp_path / "f"
    write_mnist_like(folder)
    for f in folder.iterdir():
        f.rename(
            folder / f.name.replace("-idx", ".idx")
        )  # train-images.idx3-ubyte.gz, as some mirrors name them
    splits = load_dataset("fashion-mnist", data_dir=folder)
    assert len(splits.train) == 12 and len(splits.test) == 5 and splits.info.classes[1] == "Trouser"


def test_fashion_mnist_in_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "SYSTEM_FASHION_DIR", tmp_path / "nothing")
    write_mnist_like(tmp_path / "cache" / "fashion-mnist")
    assert len(load_dataset("fashion-mnist").train) == 12


def test_idx_label_out_of_range(tmp_path):
    write_mnist_like(tmp_path / "f", classes=11)
    with pytest.raises(CnnzooError, match="label 10 but fashion-mnist has 10 classes"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "f")


def test_idx_count_mismatch(tmp_path):
    write_mnist_like(tmp_path / "f")
    write_idx(tmp_path / "f" / "t10k-labels-idx1-ubyte.gz", np.zeros(4, dtype=np.uint8))
    with pytest.raises(CnnzooError, match=r"t10k-labels-idx1-ubyte.gz: \(4,\) labels for 5 images"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "f")


# --- downloads and KMNIST --------------------------------------------------------------------------------


def test_download_verifies_and_renames(tmp_path, monkeypatch):
    serve(monkeypatch, {"https://x/f.bin": b"payload"})
    dest = download_file("https://x/f.bin", tmp_path / "d" / "f.bin", md5(b"payload"), progress=False)
    assert dest.read_bytes() == b"payload"
    assert [p.name for p in dest.parent.iterdir()] == ["f.bin"]  # no temporary file left


def test_download_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch):
    serve(monkeypatch, {"https://x/f.bin": b"tampered"})
    with pytest.raises(
        CnnzooError, match=f"checksum mismatch for https://x/f.bin.*expected {md5(b'payload')}"
    ):
        download_file("https://x/f.bin", tmp_path / "f.bin", md5(b"payload"), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_network_failure(tmp_path, monkeypatch):
    serve(monkeypatch, {})
    with pytest.raises(CnnzooError, match="cannot download https://x/f.bin: no route to host"):
        download_file("https://x/f.bin", tmp_path / "f.bin", md5(b""), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_skips_a_verified_file_and_replaces_a_bad_one(tmp_path, monkeypatch):
    asked = serve(monkeypatch, {"https://x/f.bin": b"payload"})
    (tmp_path / "f.bin").write_bytes(b"payload")
    download_file("https://x/f.bin", tmp_path / "f.bin", md5(b"payload"), progress=False)
    assert asked == []
    (tmp_path / "f.bin").write_bytes(b"half")
    download_file("https://x/f.bin", tmp_path / "f.bin", md5(b"payload"), progress=False)
    assert asked == ["https://x/f.bin"] and (tmp_path / "f.bin").read_bytes() == b"payload"


def test_kmnist_needs_download_flag(tmp_path):
    with pytest.raises(
        CnnzooError, match=f"KMNIST is not in {tmp_path / 'cache' / 'kmnist'}: pass --download"
    ):
        load_dataset("kmnist")


def kmnist_server(tmp_path, monkeypatch):
    """Small KMNIST-named IDX files served at the real URLs, with their MD5s in place of the published ones."""
    write_mnist_like(tmp_path / "upstream")
    files = {sources._KMNIST_URL + f.name: f.read_bytes() for f in (tmp_path / "upstream").iterdir()}
    monkeypatch.setattr(sources, "_KMNIST_MD5", {url.rsplit("/", 1)[1]: md5(b) for url, b in files.items()})
    return files


def test_kmnist_download_and_load(tmp_path, monkeypatch):
    asked = serve(monkeypatch, kmnist_server(tmp_path, monkeypatch))
    splits = load_dataset("kmnist", download=True, progress=False)
    assert len(asked) == 4 and all(u.startswith("http://codh.rois.ac.jp/kmnist/") for u in asked)
    assert len(splits.train) == 12 and splits.info.classes[0] == "o" and not splits.info.flip
    assert "CODH" in splits.info.source
    assert len(list((tmp_path / "cache" / "kmnist").glob("*.gz"))) == 4
    load_dataset("kmnist")  # now cached: no download needed
    assert len(asked) == 4


def test_kmnist_corrupt_download_raises(tmp_path, monkeypatch):
    files = kmnist_server(tmp_path, monkeypatch)
    first = next(iter(files))
    files[first] = files[first][:-10]
    serve(monkeypatch, files)
    with pytest.raises(CnnzooError, match="checksum mismatch"):
        load_dataset("kmnist", download=True, progress=False)
    assert not (tmp_path / "cache" / "kmnist" / first.rsplit("/", 1)[1]).exists()


def test_real_checksums_are_the_published_ones():
    assert sources._CIFAR["cifar10"].md5 == "c32a1d4ab5d03f1284b67883e8d87530"
    assert sources._CIFAR["cifar100"].md5 == "03b5dce01913d631647c71ecab9e9e88"
    assert sources._KMNIST_MD5["train-images-idx3-ubyte.gz"] == "bdb82020997e1d708af4cf47b453dcf7"


# --- CIFAR binary ----------------------------------------------------------------------------------------


def cifar_records(labels, label_bytes=1, seed=0):
    """Records as the binary release lays them out: label byte(s), then the R, G and B planes of 32x32."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
    heads = np.array(labels, dtype=np.uint8).reshape(len(labels), label_bytes)
    return np.concatenate([heads, images.reshape(len(labels), -1)], axis=1).tobytes(), images


def write_tarball(path: Path, members: dict[str, bytes]) -> bytes:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path.read_bytes()


def cifar10_members():
    names = b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n"
    members = {"cifar-10-batches-bin/batches.meta.txt": names}
    for i in range(1, 6):
        members[f"cifar-10-batches-bin/data_batch_{i}.bin"] = cifar_records([i, 9, 0], seed=i)[0]
    members["cifar-10-batches-bin/test_batch.bin"] = cifar_records([3, 4], seed=9)[0]
    return members


def test_parse_cifar_layout():
    data, images = cifar_records([7, 2])
    x, y = parse_cifar(data)
    assert torch.equal(x, torch.from_numpy(images)) and y.tolist() == [7, 2]
    data, _ = cifar_records([[3, 42], [19, 99]], label_bytes=2)
    assert parse_cifar(data, label_bytes=2)[1].tolist() == [42, 99]  # the fine label
    with pytest.raises(CnnzooError, match="not a whole number of 3073-byte CIFAR records"):
        parse_cifar(data[:-1], source="x.bin")


def test_cifar10_from_data_dir(tmp_path):
    write_tarball(tmp_path / "cifar-10-binary.tar.gz", cifar10_members())
    splits = load_dataset("cifar10", data_dir=tmp_path)
    assert splits.train.images.shape == (15, 3, 32, 32) and splits.test.images.shape == (2, 3, 32, 32)
    assert splits.train.labels.tolist()[:6] == [1, 9, 0, 2, 9, 0]
    info = splits.info
    assert info.classes[0] == "airplane" and info.num_classes == 10 and info.channels == 3 and info.flip
    assert info.image_size == 32 and len(info.mean) == 3 and "Krizhevsky" in info.source
    expected = cifar_records([1, 9, 0], seed=1)[1]
    assert torch.equal(splits.train.images[:3], torch.from_numpy(expected))


def test_cifar10_extracted_folder(tmp_path):
    for name, data in cifar10_members().items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    assert len(load_dataset("cifar10", data_dir=tmp_path).train) == 15


def test_cifar100_download(tmp_path, monkeypatch):
    names = "\n".join(f"class{i}" for i in range(100)).encode()
    members = {
        "cifar-100-binary/fine_label_names.txt": names,
        "cifar-100-binary/coarse_label_names.txt": b"c0\n",
        "cifar-100-binary/train.bin": cifar_records([[0, 99], [1, 5], [2, 0]], label_bytes=2)[0],
        "cifar-100-binary/test.bin": cifar_records([[4, 50]], label_bytes=2)[0],
    }
    tarball = write_tarball(tmp_path / "c.tar.gz", members)
    spec = sources._CIFAR["cifar100"]
    monkeypatch.setitem(sources._CIFAR, "cifar100", dataclasses.replace(spec, md5=md5(tarball)))
    with pytest.raises(CnnzooError, match="pass --download"):
        load_dataset("cifar100")
    serve(monkeypatch, {spec.url: tarball})
    splits = load_dataset("cifar100", download=True, progress=False)
    assert splits.train.labels.tolist() == [99, 5, 0] and splits.test.labels.tolist() == [50]
    assert splits.info.num_classes == 100 and splits.info.classes[99] == "class99"
    assert (tmp_path / "cache" / "cifar100" / "cifar-100-binary.tar.gz").is_file()


def test_cifar_download_checksum_mismatch(tmp_path, monkeypatch):
    tarball = write_tarball(tmp_path / "c.tar.gz", cifar10_members())
    serve(monkeypatch, {sources._CIFAR["cifar10"].url: tarball})  # not the published bytes
    with pytest.raises(CnnzooError, match="checksum mismatch.*c32a1d4ab5d03f1284b67883e8d87530"):
        load_dataset("cifar10", download=True, progress=False)
    assert list((tmp_path / "cache" / "cifar10").iterdir()) == []


def test_cifar_corrupt_or_wrong_archive(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "cifar-10-binary.tar.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(CnnzooError, match="corrupt archive .*delete it and download again"):
        load_dataset("cifar10", data_dir=tmp_path / "a")
    (tmp_path / "b").mkdir()
    write_tarball(tmp_path / "b" / "cifar-10-binary.tar.gz", {"other/file.txt": b"hi"})
    with pytest.raises(CnnzooError, match="lacks cifar-10-batches-bin/batches.meta.txt"):
        load_dataset("cifar10", data_dir=tmp_path / "b")


# --- digits (scikit-learn) -------------------------------------------------------------------------------


def test_digits():
    splits = load_dataset("digits")
    assert len(splits.train) + len(splits.test) == 1797
    assert splits.train.images.shape[1:] == (1, 28, 28) and splits.test.images.dtype == torch.uint8
    assert abs(len(splits.test) - 0.2 * 1797) < 10
    assert torch.bincount(splits.test.labels).min() >= 30  # every class held out, about 20% of each
    assert int(splits.train.images.max()) == 255
    assert splits.info.classes == tuple("0123456789") and not splits.info.flip
    again = load_dataset("digits")
    assert torch.equal(again.test.labels, splits.test.labels) and torch.equal(
        again.test.images, splits.test.images
    )


def test_digits_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    with pytest.raises(CnnzooError, match="pip install scikit-learn"):
        load_dataset("digits")
