"""timm models for benchmarks/prune_sweep.py: one model per architecture family.

A *family* is a timm module (``timm.list_modules()``: ``resnet``, ``vision_transformer``,
``ghostnet``...). Its representative is its smallest model by parameter count (timm's own
``test_*`` models excluded), found by building every model of the family on the meta device
(no memory, no weights); families whose smallest model has more than ``MAX_PARAMS`` parameters
are listed as skipped. Sweep names are ``timm:ARCH``; each model runs on its own default input
size (``pretrained_cfg["input_size"]``) with random weights.

    python benchmarks/_timm_models.py [--out bench-out/timm_families.json]

writes the selection (with the timm version) so a sweep can be repeated on the same list.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

PREFIX = "timm:"
MAX_PARAMS = 100_000_000
DEFAULT_LIST = Path("bench-out") / "timm_families.json"


def is_timm(name: str) -> bool:
    return name.startswith(PREFIX)


def arch(name: str) -> str:
    return name[len(PREFIX) :]


def _module_of() -> dict[str, str]:
    import timm

    return {m: mod for mod in timm.list_modules() for m in timm.list_models(module=mod)}


def family(name: str) -> str:
    """The timm module (architecture family) of a ``timm:ARCH`` name."""
    return _module_of().get(arch(name), "?")


def select(progress: bool = True) -> dict[str, Any]:
    """The smallest model of every timm family (and the skipped families, with why)."""
    import timm
    import torch

    chosen: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for mod in timm.list_modules():
        best: dict[str, Any] | None = None
        errors = []
        for name in timm.list_models(module=mod):
            if name.startswith("test_"):
                continue
            try:
                with warnings.catch_warnings(), torch.device("meta"):
                    warnings.simplefilter("ignore")
                    model = timm.create_model(name, pretrained=False)
            except Exception as exc:  # a model that cannot build on the meta device
                errors.append(f"{name}: {type(exc).__name__}")
                continue
            params = sum(p.numel() for p in model.parameters())
            if best is None or params < best["params"]:
                size = list(model.pretrained_cfg.get("input_size", (3, 224, 224)))
                best = {"name": PREFIX + name, "params": params, "input_size": size}
        if best is None:
            skipped[mod] = "no model builds: " + "; ".join(errors[:3])
        elif best["params"] > MAX_PARAMS:
            skipped[mod] = f"smallest model {best['name']} has {best['params'] / 1e6:.0f} M params"
        else:
            chosen[mod] = best
        if progress:
            print(f"{mod:<28} {chosen.get(mod, {}).get('name') or skipped.get(mod)}", flush=True)
    return {"timm": timm.__version__, "families": chosen, "skipped": skipped}


def load_list(path: Path = DEFAULT_LIST) -> dict[str, Any]:
    """The saved selection, made first (a few minutes) when there is none at ``path``."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(select(), indent=1))
    return json.loads(path.read_text())


def build(name: str) -> Any:
    import timm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return timm.create_model(arch(name), pretrained=False).eval()


def example(name: str) -> tuple[Any, ...]:
    import timm
    import torch

    cfg = timm.get_pretrained_cfg(arch(name))
    size = tuple(cfg.input_size) if cfg is not None else (3, 224, 224)
    return (torch.randn(1, *size),)


def classifier_layers(model: Any) -> list[Any]:
    """The modules of the classifier head (timm's ``get_classifier()``), for Torch-Pruning's
    ``ignored_layers`` as its timm example does."""
    from torch import nn

    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    heads = head if isinstance(head, (tuple, list)) else [head]
    return [m for h in heads if isinstance(h, nn.Module) for m in h.modules()
            if isinstance(m, (nn.Linear, nn.Conv2d))]  # fmt: skip


def tp_num_heads(model: Any) -> dict[Any, int]:
    """Torch-Pruning's ``num_heads`` for timm attention blocks (``qkv`` + ``num_heads``), as
    in its timm example."""
    return {m.qkv: m.num_heads for m in model.modules()
            if hasattr(m, "qkv") and isinstance(getattr(m, "num_heads", None), int)}  # fmt: skip


def tp_after_step(model: Any) -> None:
    """Torch-Pruning's timm example: attention blocks take their new head size after the step."""
    for m in model.modules():
        heads = getattr(m, "num_heads", None)
        if hasattr(m, "qkv") and isinstance(heads, int) and hasattr(m, "head_dim"):
            m.head_dim = m.qkv.out_features // (3 * m.num_heads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_LIST)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(select(), indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
