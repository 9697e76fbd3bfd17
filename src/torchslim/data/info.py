"""What a model and its transforms need to know about a dataset, apart from loading it.

Its own module so that ``datasets`` (which builds the default transforms) and ``transforms``
(which reads the image size and normalisation) both import it and not each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and its transforms need to know about a dataset."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()
