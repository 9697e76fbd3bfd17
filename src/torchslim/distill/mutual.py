"""Online distillation: deep mutual learning of two or more networks trained together."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from torchslim._tensors import first_tensor
from torchslim.config import from_dict
from torchslim.distill.config import MutualConfig
from torchslim.errors import ConfigError
from torchslim.train import Callback, StepContext, Trainer, TrainResult, evaluate


def mimicry_kl(logits: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """Sum over networks of the mean KL from each other network's (detached) softened
    prediction to this one's, times ``T^2``: every network learns from all its peers.

    Example:
        >>> z = torch.randn(4, 10)
        >>> float(mimicry_kl([z, z.clone()], 1.0))
        0.0
    """
    t = temperature
    log_probs = [F.log_softmax(z.float() / t, dim=-1) for z in logits]
    total = logits[0].new_zeros((), dtype=torch.float32)
    for i, log_p in enumerate(log_probs):
        others = [q.detach() for j, q in enumerate(log_probs) if j != i]
        kl = [F.kl_div(log_p, q, reduction="batchmean", log_target=True) for q in others]
        total = total + torch.stack(kl).mean()
    return t * t * total


class MutualLearning(nn.Module):
    """The peers of a deep-mutual-learning cohort as a trainer extra loss: the trainer's model is
    the first network; the peers are submodules here, so they train and checkpoint with it.

    Example:
        >>> peers = [nn.Linear(4, 3)]
        >>> dml = MutualLearning(peers, MutualConfig())
        >>> ctx = StepContext(nn.Linear(4, 3), torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]),
        ...                   torch.randn(5, 3), 0, 0)
        >>> sorted(dml(ctx))
        ['mutual_kl', 'peer_ce']
    """

    def __init__(self, peers: Sequence[nn.Module], config: MutualConfig) -> None:
        super().__init__()
        self.peers = nn.ModuleList(peers)
        self.config = config

    def forward(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        peer_logits = [first_tensor(peer(ctx.inputs)) for peer in self.peers]
        ce = torch.stack([F.cross_entropy(z, ctx.targets) for z in peer_logits]).sum()
        logits = [first_tensor(ctx.outputs), *peer_logits]
        kl = self.config.kl_weight * mimicry_kl(logits, self.config.temperature)
        return {"peer_ce": ce, "mutual_kl": kl}


@dataclass(frozen=True)
class MutualResult:
    """The trained cohort, the run's history (logged for the first network) and every
    network's final eval accuracy (when eval data was given)."""

    models: list[nn.Module]
    history: TrainResult
    eval_acc: list[float]


def mutual_learning(
    models: Sequence[nn.Module],
    train_data: Dataset | DataLoader,
    config: MutualConfig | Mapping[str, Any] | None = None,
    *,
    eval_data: Dataset | DataLoader | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[Callback] = (),
) -> MutualResult:
    """Train two or more networks together, each on the labels and on the others' predictions
    (Zhang et al. 2018, DML), through the one trainer (one optimizer steps every network).

    Example:
        >>> from torchslim.data import get_dataset, stratified_subset
        >>> from torchslim.models import create
        >>> data = stratified_subset(get_dataset("fashion-mnist", train=True), per_class=8)
        >>> nets = [create("mlp", num_classes=10, in_channels=1, hidden=(16,)) for _ in range(2)]
        >>> res = mutual_learning(nets, data, {"train": {"epochs": 1, "progress": False}})
        >>> len(res.models)
        2
    """
    cfg = from_dict(MutualConfig, config)
    if len(models) < 2:
        raise ConfigError(f"mutual learning needs at least two networks, got {len(models)}")
    first, peers = models[0], list(models[1:])
    cohort = MutualLearning(peers, cfg)
    trainer = Trainer(
        first,
        cfg.train,
        train_data,
        eval_data,
        extra_losses=[cohort],
        callbacks=callbacks,
        out_dir=out_dir,
        metadata={"phase": "mutual", "networks": len(models)},
    )
    history = trainer.fit(resume=resume, overwrite=overwrite)
    accs: list[float] = []
    if eval_data is not None:
        accs = [trainer.evaluate().accuracy]
        accs += [
            evaluate(peer, eval_data, batch_size=256, device=trainer.device).accuracy
            for peer in peers
        ]
    return MutualResult(list(models), history, accs)
