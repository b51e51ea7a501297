"""`hubconf.py`: torch.hub builds every cnnzoo model from this checkout, as `cnnzoo.create_model` does.

torch.hub needs nothing but torch here (`source="local"`), so these run everywhere; a fresh Python whose
cnnzoo comes only from hubconf's `sys.path` entry shows that a clone works without installing it.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cnnzoo

REPO = Path(__file__).resolve().parents[1]


def _hub_module():
    """hubconf imported as torch.hub imports it."""
    return torch.hub._import_module("hubconf", str(REPO / "hubconf.py"))


def test_every_model_is_an_entry_point_and_nothing_else():
    """What `torch.hub.list` returns: the public callables of hubconf (torch's own rule)."""
    hub = _hub_module()
    entries = [f for f in dir(hub) if callable(getattr(hub, f)) and not f.startswith("_")]
    assert sorted(entries) == cnnzoo.list_models()
    assert all(isinstance(d, str) for d in hub.dependencies)
    assert "LeCun" in hub.lenet5.__doc__ and "create_model" in hub.resnet18.__doc__


def test_resnet18_with_ten_classes_is_create_models():
    torch.manual_seed(0)
    got = torch.hub.load(str(REPO), "resnet18", source="local", num_classes=10)
    torch.manual_seed(0)
    want = cnnzoo.create_model("resnet18", num_classes=10)
    assert type(got) is type(want) and got.num_classes == 10
    a, b = got.state_dict(), want.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert got.pretrained_cfg == want.pretrained_cfg


def test_lenet5_pretrained_on_mnist_gives_the_bundled_weights():
    got = torch.hub.load(str(REPO), "lenet5", source="local", pretrained="mnist").eval()
    want = cnnzoo.create_model("lenet5", pretrained="mnist").eval()
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(got(x), want(x))
    assert got.pretrained_cfg["classes"] == want.pretrained_cfg["classes"]


def test_every_entry_point_loads():
    """Built on the meta device: the structure of every model, no memory and no initialisation."""
    with torch.device("meta"):
        for name in cnnzoo.list_models():
            model = torch.hub.load(str(REPO), name, source="local", num_classes=3)
            assert model.model_name == name and model.num_classes == 3


def test_a_clone_needs_no_install(tmp_path):
    """A fresh Python, with hubconf in a folder of its own: its cnnzoo is that folder's `src/`, not the
    installed one (hubconf puts `src/` first on `sys.path`)."""
    clone = tmp_path / "clone"
    (clone / "src").mkdir(parents=True)
    (clone / "hubconf.py").write_text((REPO / "hubconf.py").read_text())
    (clone / "src" / "cnnzoo").symlink_to(REPO / "src" / "cnnzoo", target_is_directory=True)
    code = (
        "import sys, torch\n"
        "m = torch.hub.load(sys.argv[1], 'lenet5', source='local', pretrained='mnist')\n"
        "import cnnzoo\n"
        "print(cnnzoo.__file__, type(m).__name__, m.pretrained_cfg['tag'])\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-c", code, str(clone)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    path, cls, tag = done.stdout.split()
    assert path == str(clone / "src" / "cnnzoo" / "__init__.py") and cls == "LeNet5" and tag == "mnist"


def test_an_unknown_model_is_torch_hubs_error():
    with pytest.raises(RuntimeError, match="Cannot find callable"):
        torch.hub.load(str(REPO), "resnet9", source="local")
