"""Datasets held in memory as uint8 tensors, batched augmentation and the loader."""

from .base import ArrayDataset, DatasetInfo, Splits

__all__ = ["ArrayDataset", "DatasetInfo", "Splits", "load_dataset", "list_datasets"]


def load_dataset(name: str, **kwargs) -> Splits:
    from .sources import load_dataset as _load

    return _load(name, **kwargs)


def list_datasets() -> list[str]:
    from .sources import list_datasets as _list

    return _list()
