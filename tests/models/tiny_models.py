"""Cheap configurations of every model in torchslim's zoo, for tests to parametrise over.

Test files outside tests/models put this folder on ``sys.path`` to import it.
"""

from __future__ import annotations

TINY_MODELS: dict[str, dict] = {
    "resnet8": {},
    "mobilenetv1": {"width_mult": 0.25},
    "mobilenetv2": {"width_mult": 0.25},
    "smallcnn": {"widths": (8, 16, 32)},
    "mlp": {"hidden": (32,)},
}
