"""The per-layer pruning report: channels, parameters and MACs before and after."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from torchslim.analysis import ModelStats
from torchslim.tables import format_count, text_table

if TYPE_CHECKING:
    from torchslim.graph.trace import ChannelGraph
    from torchslim.prune.apply import Keep
    from torchslim.prune.importance import Group


@dataclass(frozen=True)
class LayerChange:
    name: str
    type: str
    channels_before: int
    channels_after: int
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


@dataclass(frozen=True)
class PruneReport:
    """Totals, per-layer rows and why some channels were kept (frozen groups)."""

    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    groups: int
    channels_before: int
    channels_after: int
    frozen: dict[str, int]  # reason -> number of channel spaces kept for it
    layers: tuple[LayerChange, ...]
    seconds: float
    # Groups kept whole because the model no longer ran with them pruned: (group, the error).
    repaired: tuple[tuple[str, str], ...] = ()
    # Ops of unknown channel behaviour, whose channels were kept whole ("aten.topk in ...").
    unknown_ops: tuple[str, ...] = ()

    def why_nothing(self) -> str:
        """Why a pruning removed no channel: no prunable group, or what kept them whole."""
        if not self.groups:
            reasons = ", ".join(f"{n} x {why}" for why, n in Counter(self.frozen).most_common(3))
            return ("no prunable channel group" + (f" (kept whole: {reasons})" if reasons else "")
                    + "; see ts.report(model) and the ignore/ratio settings")  # fmt: skip
        return (f"{self.groups} groups, but the ratio left every one whole (ratio too small, "
                "or round_to larger than the groups)")  # fmt: skip

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / max(1, self.macs_before)

    @property
    def params_ratio(self) -> float:
        return self.params_after / max(1, self.params_before)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "layers": [asdict(r) for r in self.layers]}

    def __str__(self) -> str:
        header = ("layer", "type", "channels", "params", "MACs")
        rows = [
            (
                r.name,
                r.type,
                f"{r.channels_before} -> {r.channels_after}",
                f"{format_count(r.params_before)} -> {format_count(r.params_after)}",
                f"{format_count(r.macs_before)} -> {format_count(r.macs_after)}",
            )
            for r in self.layers
        ]
        lines = text_table(header, rows)
        lines.append(
            f"total: params {format_count(self.params_before)} -> "
            f"{format_count(self.params_after)} ({self.params_ratio:.1%}), MACs "
            f"{format_count(self.macs_before)} -> {format_count(self.macs_after)} "
            f"({self.macs_ratio:.1%}); {self.groups} groups, channels {self.channels_before} -> "
            f"{self.channels_after}; {self.seconds:.2f} s"
        )
        if self.frozen:
            kept = "; ".join(f"{n} x {why}" for why, n in self.frozen.most_common(5))
            lines.append(f"kept whole: {kept}")
        for op in self.unknown_ops:
            lines.append(f"kept whole, unknown op: {op}")
        for group, error in self.repaired:
            lines.append(f"kept whole, pruning it broke the model: {group} ({error})")
        return "\n".join(lines)


# Layers whose channels are the output's last axis (token features), not its second.
_CHANNELS_LAST = ("Linear", "Conv1D", "Embedding", "LayerNorm", "RMSNorm")


def out_channels(stats_row: Any) -> int:
    """The channels a layer's row of ``ts.analyze`` reports: its output's second axis, or the
    last for token layers (Linear, Embedding, LayerNorm)."""
    shape = stats_row.output_shape
    if len(shape) > 1 and stats_row.type.endswith(_CHANNELS_LAST):
        return shape[-1]
    return shape[1] if len(shape) > 1 else (shape[0] if shape else 0)


def build_report(
    before: ModelStats,
    after: ModelStats,
    graph: ChannelGraph,
    groups: list[Group],
    keep: Keep,
    seconds: float,
    repaired: tuple[tuple[str, str], ...] = (),
) -> PruneReport:
    after_rows = {r.name: r for r in after.layers}
    layers = []
    for r in before.layers:
        a = after_rows.get(r.name)
        if a is None or (r.params == 0 and r.macs == 0):
            continue
        layers.append(
            LayerChange(
                r.name,
                r.type,
                out_channels(r),
                out_channels(a),
                r.params,
                a.params,
                r.macs,
                a.macs,
            )
        )
    sp = graph.spaces
    frozen = Counter(
        sp.spaces[a].frozen.split(" (")[0] for a in graph.atoms() if sp.spaces[a].frozen
    )
    return PruneReport(
        before.params,
        after.params,
        before.macs,
        after.macs,
        len(groups),
        sum(g.size for g in groups),
        sum(len(keep.get(g.id, range(g.size))) for g in groups),
        frozen,
        tuple(layers),
        seconds,
        repaired,
        tuple(graph.unknown_ops),
    )
