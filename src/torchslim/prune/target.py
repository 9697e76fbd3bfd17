"""Find the channels to keep so that the pruned model lands on a MACs (or latency) target.

Two stages: bisection on a multiplier of the configured ratios (coarse: every group moves at
once), then bisection on how many of the remaining candidate channels — ordered by their
group-normalised importance — to remove one by one (``round_to`` at a time within a group),
which reaches single-channel granularity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from torchslim.graph.trace import ChannelGraph
from torchslim.prune.apply import Keep
from torchslim.prune.importance import Group

log = logging.getLogger("torchslim.prune")


def _bracket(
    select: Callable[[float], Keep], measure: Callable[[Keep], float], goal: float, top: float
) -> tuple[Keep, Keep | None]:
    """Keeps at two scales around the goal: (cost above the goal, cost at or below it)."""
    lo, hi = 0.0, top
    above, below = select(0.0), None
    for _ in range(12):
        mid = (lo + hi) / 2
        keep = select(mid)
        if measure(keep) > goal:
            lo, above = mid, keep
        else:
            hi, below = mid, keep
        if hi - lo < 1e-3:
            break
    if below is None:
        top_keep = select(top)
        below = top_keep if measure(top_keep) <= goal else None
    return above, below


def search_keep(
    graph: ChannelGraph,
    groups: list[Group],
    scores: dict[int, torch.Tensor],
    select: Callable[[float], Keep],
    base_macs: float,
    target: float,
    top_scale: float,
    round_to: int = 1,
    cost: Callable[[Keep], float] | None = None,
    name: str = "target_macs",
) -> Keep:
    """Kept channels whose pruned model has MACs closest to ``target * base_macs``; channels
    go in chunks of ``round_to`` per group, so the counts that ``select`` rounded stay round.
    Each candidate's MACs are predicted from the trace (``ChannelGraph.macs_after``), so the
    search never copies or runs the model. ``cost`` replaces the MACs by another predicted
    cost (a latency from the look-up table; ``base_macs`` is then the unpruned model's)."""
    goal = target * base_macs
    cache: dict[tuple, float] = {}

    def measure(keep: Keep) -> float:
        key = tuple((g, len(v)) for g, v in sorted(keep.items()))
        if key not in cache:
            cache[key] = cost(keep) if cost else sum(graph.macs_after(keep).values())
        return cache[key]

    above, below = _bracket(select, measure, goal, top_scale)
    if below is None:
        log.warning("%s %.3f is out of reach; pruning as far as allowed", name, target)
        return select(top_scale)
    # Candidates: channels kept "above" but dropped "below", least important first, in chunks
    # of round_to channels of one group (so channel counts stay multiples of round_to).
    candidates: list[tuple[float, int, list[int]]] = []
    for g in groups:
        dropped = set(above[g.id].tolist()) - set(below[g.id].tolist())
        norm = scores[g.id] / (scores[g.id].mean() + 1e-12)
        ranked = sorted(dropped, key=lambda c: float(norm[c]))
        for i in range(0, len(ranked), round_to):
            chunk = ranked[i : i + round_to]
            candidates.append((float(norm[chunk].mean()), g.id, chunk))
    candidates.sort(key=lambda cand: cand[0])

    def keep_without(n: int) -> Keep:
        removed: dict[int, set[int]] = {}
        for _, gid, chunk in candidates[:n]:
            removed.setdefault(gid, set()).update(chunk)
        return {
            gid: torch.tensor([c for c in idx.tolist() if c not in removed.get(gid, ())])
            for gid, idx in above.items()
        }

    lo, hi = 0, len(candidates)  # MACs(keep_without(lo)) > goal >= MACs(keep_without(hi))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if measure(keep_without(mid)) > goal:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda n: abs(measure(keep_without(n)) - goal))
    keep = keep_without(best)
    err = abs(measure(keep) - goal) / base_macs
    if err > 0.01:
        log.warning("%s %.3f: closest reachable is within %.3f", name, target, err)
    return keep
