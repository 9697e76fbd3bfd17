"""Product quantization of weights: sub-vector k-means codebooks, and the Q-CNN variant.

A layer's weight, as a matrix ``W`` of ``out`` rows (``in x kh x kw`` columns for a conv), is
split column-wise into sub-spaces of ``subvector`` columns. In each sub-space the ``out``
sub-vectors are replaced by the nearest of ``codebook_size`` centroids, so the layer stores one
small codebook per sub-space and one ``log2(codebook_size)``-bit code per row and sub-space.

* ``method="kmeans"``: centroids minimise the weight reconstruction error (plain k-means);
* ``method="qcnn"`` (Wu et al. 2016, Quantized CNN): centroids and assignments minimise the
  error of the layer's *output* on calibration inputs, sub-space by sub-space with the error of
  the others fed back (error correction). Needs ``calib_data``.

``pq_size(model)`` / ``save_pq(model, path)`` report and write the real compressed size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from torchslim._tensors import call_model
from torchslim.config import from_dict
from torchslim.errors import ConfigError
from torchslim.quant.arrays import save_arrays
from torchslim.quant.config import PQConfig as PQConfig
from torchslim.quant.config import PQMethod as PQMethod
from torchslim.quant.ptq import calib_inputs


def _matrix(layer: nn.Module) -> torch.Tensor:
    return layer.weight.detach().reshape(layer.weight.shape[0], -1)


def _kmeans(x: torch.Tensor, k: int, iterations: int, gen: torch.Generator) -> tuple:
    """Lloyd's k-means on the rows of ``x``: (centroids [k, d], codes [rows])."""
    k = min(k, x.shape[0])
    centroids = x[torch.randperm(x.shape[0], generator=gen)[:k]].clone()
    codes = torch.zeros(x.shape[0], dtype=torch.long)
    for _ in range(iterations):
        codes = torch.cdist(x, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, codes, x)
        counts = torch.bincount(codes, minlength=k).unsqueeze(1)
        empty = counts[:, 0] == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp(min=1))
    return centroids, torch.cdist(x, centroids).argmin(1)


def _qcnn_refine(w: torch.Tensor, x: torch.Tensor, books: list, codes: list, d: int,
                 iterations: int) -> None:  # fmt: skip
    """Q-CNN: minimise ||X W^T - X W_hat^T|| over codebooks and codes, sub-space by sub-space."""
    y = x @ w.T
    w_hat = torch.cat([books[s][codes[s]] for s in range(len(books))], 1)
    ridge = 1e-6 * x.pow(2).mean()
    for _ in range(iterations):
        for s in range(len(books)):
            cols = slice(s * d, (s + 1) * d)
            xs = x[:, cols]
            residual = y - x @ w_hat.T + xs @ w_hat[:, cols].T  # what sub-space s must explain
            g = xs.T @ xs + ridge * torch.eye(xs.shape[1])
            p = xs.T @ residual  # [d, out]
            c = books[s]
            score = (c @ g * c).sum(1, keepdim=True) - 2 * c @ p  # [k, out]
            codes[s] = score.argmin(0)
            k = c.shape[0]
            sums = torch.zeros(k, p.shape[0]).index_add_(0, codes[s], p.T)
            counts = torch.bincount(codes[s], minlength=k)
            solved = torch.linalg.solve(g, (sums / counts.clamp(min=1)[:, None]).T).T
            books[s] = torch.where((counts > 0)[:, None], solved, c)
            w_hat[:, cols] = books[s][codes[s]]


def _layer_inputs(model: nn.Module, names: list[str], batches: list[tuple],
                  rows: int, gen: torch.Generator) -> dict[str, torch.Tensor]:  # fmt: skip
    """Each layer's input as rows of its weight matrix's columns (im2col for convs)."""
    got: dict[str, list[torch.Tensor]] = {n: [] for n in names}

    def hook(name: str) -> Any:
        def fn(mod: nn.Module, args: tuple, _out: Any) -> None:
            x = args[0].detach()
            if isinstance(mod, nn.Conv2d):
                cols = F.unfold(x, mod.kernel_size, mod.dilation, mod.padding, mod.stride)
                x = cols.transpose(1, 2).reshape(-1, cols.shape[1])
            else:
                x = x.reshape(-1, x.shape[-1])
            got[name].append(x[torch.randperm(x.shape[0], generator=gen)[:rows]])

        return fn

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            for inputs in batches:
                call_model(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(v)[:rows] for n, v in got.items()}


def product_quantize(
    model: nn.Module,
    config: PQConfig | Mapping[str, Any] | None = None,
    calib_data: Iterable[Any] | None = None,
    *,
    progress: bool = True,
) -> nn.Module:
    """Replace the weights of the selected layers by their product-quantized reconstruction.

    Codebooks and codes are stored on each layer (``pq_codebooks``, ``pq_codes`` buffers), so
    ``save_pq`` can write them; the float weight holds the reconstruction, so the model runs
    and fine-tunes as usual. Modifies ``model`` in place and returns it.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> _ = product_quantize(net, {"subvector": 4, "codebook_size": 8}, progress=False)
        >>> net[0].pq_codes.shape, net[0].pq_codebooks.shape
        (torch.Size([4, 32]), torch.Size([4, 8, 4]))
    """
    cfg = from_dict(PQConfig, config)
    gen = torch.Generator().manual_seed(cfg.seed)
    selected = cfg.selection.select(
        model,
        candidates=lambda n, m: bool(n) and isinstance(m, (nn.Conv2d, nn.Linear)),
        default=lambda _, m: type(m) in (nn.Conv2d, nn.Linear),
        what="Conv2d or Linear layer",
        fields=("layers", "skip"),
    )
    names = []
    for name, m in selected.items():
        if isinstance(m, nn.Conv2d) and m.groups != 1:
            continue
        if m.weight.shape[0] < cfg.min_rows:
            continue
        if _matrix(m).shape[1] % cfg.subvector == 0:
            names.append(name)
    if not names:
        raise ConfigError(f"product_quantize: no layer to compress; the selected ones need >= "
                          f"{cfg.min_rows} rows and columns divisible by subvector="
                          f"{cfg.subvector}")  # fmt: skip
    inputs: dict[str, torch.Tensor] = {}
    if cfg.method is PQMethod.QCNN:
        if calib_data is None:
            raise ConfigError("method='qcnn' fits the layer outputs: pass calib_data")
        batches = list(calib_inputs(calib_data, cfg.calib_batches))
        inputs = _layer_inputs(model, names, batches, rows=8192, gen=gen)
    for name in tqdm(names, disable=not progress, desc="product quantization", unit="layer"):
        layer = model.get_submodule(name)
        w = _matrix(layer).float()
        d = cfg.subvector
        books, codes = [], []
        for s in range(w.shape[1] // d):
            c, a = _kmeans(w[:, s * d : (s + 1) * d], cfg.codebook_size, cfg.iterations, gen)
            books.append(c)
            codes.append(a)
        if cfg.method is PQMethod.QCNN:
            _qcnn_refine(w, inputs[name].float(), books, codes, d, max(1, cfg.iterations // 4))
        w_hat = torch.cat([books[s][codes[s]] for s in range(len(books))], 1)
        with torch.no_grad():
            layer.weight.copy_(w_hat.reshape(layer.weight.shape))
        k = max(b.shape[0] for b in books)
        padded = [F.pad(b, (0, 0, 0, k - b.shape[0])) for b in books]
        layer.register_buffer("pq_codebooks", torch.stack(padded))
        layer.register_buffer("pq_codes", torch.stack(codes).to(torch.int32))
        layer.pq_code_bits = cfg.code_bits
    return model


def _pq_state(model: nn.Module) -> dict[str, np.ndarray]:
    state: dict[str, np.ndarray] = {}
    pq = {n for n, m in model.named_modules() if hasattr(m, "pq_codes")}
    for name, tensor in model.state_dict().items():
        owner, _, attr = name.rpartition(".")
        if owner in pq and attr == "weight":
            continue  # rebuilt from codebooks and codes
        if owner in pq and attr == "pq_codes":
            bits = model.get_submodule(owner).pq_code_bits
            codes = tensor.numpy().astype(np.uint16)
            unpacked = (codes[..., None] >> np.arange(bits, dtype=np.uint16)) & 1
            state[name] = np.packbits(unpacked.astype(np.uint8).flatten())
        else:
            state[name] = tensor.detach().cpu().numpy()
    return state


def pq_size(model: nn.Module) -> dict[str, int]:
    """Raw bytes: codebooks (float32) + codes (packed bits) + other tensors, vs all-float32."""
    raw = sum(a.nbytes for a in _pq_state(model).values())
    dense = sum(p.numel() * 4 for p in model.parameters()) + sum(
        b.numel() * 4 for n, b in model.named_buffers() if "pq_" not in n and b.is_floating_point()
    )
    return {"packed_bytes": raw, "float32_bytes": dense}


def save_pq(model: nn.Module, path: str | Path) -> int:
    """Write codebooks, bit-packed codes and the remaining tensors to a zip; returns its bytes."""
    return save_arrays(_pq_state(model), path)


__all__ = ["PQConfig", "PQMethod", "pq_size", "product_quantize", "save_pq"]
