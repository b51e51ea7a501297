"""Datasets held in memory as uint8 tensors, batched augmentation and the loader."""

from .base import ArrayDataset, DatasetInfo, Splits
from .sources import list_datasets, load_dataset

__all__ = ["ArrayDataset", "DatasetInfo", "Splits", "load_dataset", "list_datasets"]
