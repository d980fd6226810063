"""MNIST-style datasets: IDX/CSV formats, a registry of sources, a verified cache, loaders."""

from mnistlab.datasets.api import (
    PIXEL_SCALES,
    dataset_info,
    load_array,
    load_data,
    load_mnist,
    one_hot,
    scale_pixels,
    scale_to_range,
    scale_to_unit,
    verify_cache,
)
from mnistlab.datasets.csv import read_csv, write_csv
from mnistlab.datasets.idx import read_idx, write_idx
from mnistlab.datasets.registry import DATASETS, get_dataset
from mnistlab.datasets.sources import cache_home, fetch, fetch_all

__all__ = [
    "DATASETS",
    "PIXEL_SCALES",
    "cache_home",
    "dataset_info",
    "fetch",
    "fetch_all",
    "get_dataset",
    "load_array",
    "load_data",
    "load_mnist",
    "one_hot",
    "read_csv",
    "read_idx",
    "scale_pixels",
    "scale_to_range",
    "scale_to_unit",
    "verify_cache",
    "write_csv",
    "write_idx",
]
