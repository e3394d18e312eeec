"""Data layer: image reading, dataset layouts, torch datasets, augmentations and checks."""

from istd.data.check import CheckReport, check_dataset
from istd.data.datasets import IRSTDDataset, compute_norm_stats, load_pair
from istd.data.io import IMAGE_EXTENSIONS, decode_image, read_image, read_mask, write_png_atomic
from istd.data.layouts import LAYOUTS, DatasetIndex, Sample, open_dataset, read_split_file
from istd.data.transforms import apply_transform, eval_transform, seed_transform, train_transform

__all__ = [
    "IMAGE_EXTENSIONS",
    "CheckReport",
    "LAYOUTS",
    "DatasetIndex",
    "IRSTDDataset",
    "Sample",
    "apply_transform",
    "check_dataset",
    "compute_norm_stats",
    "decode_image",
    "eval_transform",
    "load_pair",
    "open_dataset",
    "read_image",
    "read_mask",
    "read_split_file",
    "seed_transform",
    "train_transform",
    "write_png_atomic",
]
