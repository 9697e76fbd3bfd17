"""Datasets (embedded Fashion-MNIST, MNIST, CIFAR-10, ImageFolder, COCO-format detection),
augmentations, sampling."""

from torchslim.data.coco import (
    CocoDetectionSet,
    CocoPaths,
    CocoSegmentationSet,
    detection_collate,
    make_detection_set,
)
from torchslim.data.datasets import cache_dir, dataset_info, get_dataset, targets_of
from torchslim.data.info import DatasetInfo
from torchslim.data.sampling import calibration_loader, in_memory, stratified_subset
from torchslim.data.text import text_corpus
from torchslim.data.transforms import AUGMENTATIONS, build_transforms, mix_transform

__all__ = [
    "AUGMENTATIONS",
    "CocoDetectionSet",
    "CocoPaths",
    "CocoSegmentationSet",
    "DatasetInfo",
    "build_transforms",
    "cache_dir",
    "calibration_loader",
    "dataset_info",
    "detection_collate",
    "get_dataset",
    "in_memory",
    "make_detection_set",
    "mix_transform",
    "stratified_subset",
    "targets_of",
    "text_corpus",
]
