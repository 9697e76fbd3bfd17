"""Parameters and MACs counted by ``ts.analyze`` beside the published figures.

Usage:
    python benchmarks/analyze_counts.py [--results FILE]
(the same counts as ``torchslim analyze --model NAME --input SHAPE``). MACs count
convolutions, linear layers and matrix products (attention included); BatchNorm, activations
and pooling are not counted, which is why ResNet-18 reads 1.81 G where ptflops-style tools
print 1.82 G.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Results, add_results_option

import torchslim as ts
from torchslim.models import create

# (row label, model name, input shape, classes, published params, published MACs)
MODELS = [
    ("torchvision ResNet-18, 224²", "resnet18", (1, 3, 224, 224), 1000, "11.69 M", "1.82 G"),
    ("torchvision MobileNetV2, 224²", "mobilenet_v2", (1, 3, 224, 224), 1000, "3.50 M",
     "0.30 G"),
    ("torchvision ViT-B/32, 224²", "vit_b_32", (1, 3, 224, 224), 1000, "88.2 M",
     "4.41 GFLOPS (torchvision's model card)"),
    ("torchslim ResNet-20, 1×28×28", "resnet20", (1, 1, 28, 28), 10, "~0.27 M", None),
    ("torchslim ResNet-8, 1×28×28", "resnet8", (1, 1, 28, 28), 10, None, None),
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_results_option(parser, "analyze_counts")
    args = parser.parse_args()
    res = Results(args.results, table="analyze_counts", area="foundation",
                  claim="Parameters and MACs counted by `torchslim analyze` beside published "
                  "figures", row_header=["model"])  # fmt: skip
    for label, name, shape, classes, pub_params, pub_macs in MODELS:
        model = create(name, num_classes=classes, in_channels=shape[1]).eval()
        stats = ts.analyze(model, torch.randn(*shape))
        # ResNet-8 (the distillation student) has no published count: a table of its own
        table = {"table": "analyze_resnet8"} if name == "resnet8" else {}
        for metric, value, published in (("params", stats.params, pub_params),
                                          ("MACs", stats.macs, pub_macs)):  # fmt: skip
            if name == "resnet8" and metric == "MACs":
                continue
            peer = {"name": "published", "value": published} if published else None
            res.add(label, metric, int(value), "count", 0, model=name, peer=peer, **table)
        print(f"{label}: {stats.params:,} params, {stats.macs:,} MACs")


if __name__ == "__main__":
    main()
