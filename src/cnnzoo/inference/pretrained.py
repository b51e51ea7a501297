"""Bundled pretrained weights now live in the model zoo (`cnnzoo.models._pretrained`); this path, which
docstrings and the README name, re-exports them."""

from ..models._pretrained import *  # noqa: F403
from ..models._pretrained import __all__  # noqa: F401
