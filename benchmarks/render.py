"""Regenerate the result tables of BENCHMARKS.md from benchmarks/results/*.jsonl.

Usage:
    python benchmarks/render.py            # rewrite the tables in BENCHMARKS.md
    python benchmarks/render.py --check    # exit 1 if BENCHMARKS.md differs from the results
        [--results-dir benchmarks/results] [--page BENCHMARKS.md]

BENCHMARKS.md is hand-written prose around blocks

    <!-- results:TABLE -->
    (generated)
    <!-- /results:TABLE -->

and each block is replaced by the table of the records whose ``table`` is TABLE (the record
fields are described in benchmarks/_results.py). ``<!-- results:headline -->`` is the table of
the records flagged ``headline``, one row per claim; ``<!-- results:machines -->`` lists the
machines and versions the figures come from. What a block shows of its table (which metrics,
in which order; ``pivot``: a row-label column such as ``batch`` turned into columns) is set in
``VIEWS`` below or on the block: ``<!-- results:TABLE metrics="a|b" pivot="batch" -->``; the
results keep every column either way. A figure and its table therefore cannot disagree: the
page is made from the results, and ``--check`` (run by the tests) fails when it is not.

Each table ends with the command, machine and date of its figures (a "run" column and a list
when they come from several runs). A figure with a target is marked ✓ (meets it) or ✗ (misses
it); where the same (table, row, metric) was recorded more than once, the last line wins.
"""

from __future__ import annotations

import argparse
import collections
import difflib
import json
import operator
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {"table", "row", "metric", "value", "unit"}
SPECIAL = ("headline", "machines")
BLOCK = re.compile(
    r"<!-- results:(?P<name>[A-Za-z0-9_.-]+)(?P<opts>(?: [^>]*?)?) -->\n"
    r"(?P<body>.*?)<!-- /results:(?P=name) -->",
    re.S,
)
OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}
# units written after a figure where no column header names them (the headline table)
SUFFIX = {"ms": " ms", "s": " s", "min": " min", "MiB": " MiB", "GiB": " GiB", "errors": " errors",
          "pt": " pt", "µs": " µs", "m:s": " (min:s)"}  # fmt: skip
SCALE = {"M": " M", "G": " G"}  # always written after the figure: "0.823 M", "4.41 G"


# What a block shows of its table where the page does not say (the results keep every column):
# the metrics, in order, and a row-label column to turn into columns.
SPEED_UPS = [f"{t}, batch {b}: speed-up" for t in ("1 thread", "2 threads") for b in (1, 32)]
VIEWS: dict[str, dict[str, Any]] = {
    "train_fmnist_resnet20": {"metrics": ["test top-1", "wall clock", "CPU", "peak RSS GiB"]},
    "prune_fmnist": {"metrics": ["MACs kept", "top-1 right after pruning", "top-1 after fine-tune",
                                 "change vs baseline"]},
    "prune_time_paired": {"metrics": ["first ts/TP", "median ts/TP", "min ts/TP"]},
    "prune_time_paired_vit": {"metrics": ["first ts/TP", "median ts/TP", "min ts/TP"]},
    "prune_latency": {"metrics": ["speedup / reduction"], "pivot": "batch"},
    "prune_latency_round1": {"metrics": ["speedup / reduction"], "pivot": "batch"},
    "prune_latency_default": {"metrics": ["speedup / reduction"], "pivot": "batch"},
    "latency_table": {"metrics": ["mean |error|", "max |error|", "within 10%",
                                  "mean |error| of the ratio to dense",
                                  "ratio within 10%", "repeat spread, median", "dense ms"]},
    "search_fmnist": {"metrics": ["test top-1 at 0.25 MACs, mean of 3 seeds",
                                  "test top-1 at 0.5 MACs, mean of 3 seeds"]},
    "search_cifar10": {"metrics": ["test top-1 at 0.25 MACs, mean of 3 seeds",
                                   "test top-1 at 0.5 MACs, mean of 3 seeds"]},
    "minilm_quant": {"metrics": ["file bytes", "file MB", "cosine to float, min",
                                 "top-10 overlap", *SPEED_UPS]},
    "minilm_quant_static": {"metrics": ["file bytes", "file MB", "cosine to float, min",
                                        "top-10 overlap", *SPEED_UPS]},
    "minilm_int4": {"metrics": ["Linear weight ratio", "file MB", "cosine to float, min",
                                "top-10 overlap", *SPEED_UPS]},
    "minilm_prune_distill": {"metrics": ["GMACs (2 x 128 tokens)", "cosine to float, min",
                                         "top-10 overlap", *SPEED_UPS]},
    "vit_cifar": {"metrics": ["MMACs", "top-1", "drop vs float"]},
    "search_latency": {"metrics": ["|measured latency / budget - 1|, worst seed"]},
    "prune_latency_processes": {"metrics": ["batch 1 median", "batch 1 runs ≥ 0.85",
                                            "batch 32 median", "batch 32 runs ≥ 0.85"]},
    "quant_fmnist": {"metrics": ["change vs FP32"], "pivot": "weights"},
    "qat_fmnist": {"metrics": ["top-1 PyTorch", "top-1 ORT", "change vs float"]},
    "quant_ort_compare": {"metrics": ["size vs FP32", "b1 speedup vs FP32",
                                      "b32 speedup vs FP32"]},
    "distill_hinton": {"metrics": ["test errors"]},
    "quant_ort_accuracy": {"metrics": ["top-1 (ORT)", "change vs FP32"]},
    "quant_dynamic": {"metrics": ["top-1 (ORT)", "size vs FP32", "b1 speedup", "b32 speedup",
                                  "PyTorch vs ORT max abs diff"]},
    "pq_fmnist": {"metrics": ["top-1", "change", "bytes on disk", "vs float32 file"]},
    "binary_fmnist": {"metrics": ["top-1", "change", "bytes on disk", "vs float32 file"]},
    "distill_fmnist": {"metrics": ["top-1 (mean)", "vs CE"]},
    "demo": {"metrics": ["top-1 ORT", "Δ top-1", "MACs", "ONNX file (MiB)", "smaller",
                         "b1 speed-up", "b32 speed-up"]},
}  # fmt: skip


class RenderError(Exception):
    """A results file or a block of the page that cannot be rendered."""


# -- reading ---------------------------------------------------------------------------------


def load(results_dir: Path) -> list[dict[str, Any]]:
    """Every record of ``results_dir/*.jsonl``, files in name order, lines in file order."""
    records = []
    for path in sorted(Path(results_dir).glob("*.jsonl")):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RenderError(f"{path}:{i}: not a JSON line ({exc})") from None
            missing = REQUIRED - rec.keys()
            if missing:
                raise RenderError(f"{path}:{i}: missing {', '.join(sorted(missing))}")
            rec["row"] = [rec["row"]] if isinstance(rec["row"], str) else rec["row"]
            records.append(rec)
    return records


def current(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last record of each (table, row, metric, run), in the order each first appeared."""
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rec in records:
        latest[(rec["table"], tuple(rec["row"]), rec["metric"], rec.get("run"))] = rec
    return list(latest.values())


# -- formatting ------------------------------------------------------------------------------


def fmt_number(value: Any, unit: str, digits: int | None, join: str = " / ") -> str:
    """One value as BENCHMARKS.md prints it: ``92.70%``, ``-0.61``, ``1,095,665``, ``1.55x``."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return join.join(fmt_number(v, unit, digits) for v in value)
    d = digits if digits is not None else (0 if isinstance(value, int) else 2)
    if unit == "%":
        return f"{value:.{d}f}%"
    if unit == "pt":
        return f"{value:+.{d}f}"
    if unit == "x":
        return f"{value:.{d}f}x"
    if unit in ("bytes", "count", "params", "MACs"):
        return f"{value:,.{d}f}"
    if unit == "m:s":  # seconds shown as minutes:seconds
        minutes, seconds = divmod(value, 60)
        return f"{int(minutes)}:{seconds:0{d + 3 if d else 2}.{d}f}"
    if unit == "min s":  # seconds shown as "9 min 11 s"
        minutes, seconds = divmod(round(value), 60)
        return f"{minutes} min {seconds} s"
    if unit == "sci":
        mantissa, exp = f"{value:.{d}e}".split("e")
        return f"{mantissa}e{int(exp)}"
    return f"{value:.{d}f}"


def fmt_value(rec: dict[str, Any], with_unit: bool = False) -> str:
    """A record's (or a peer's) value, with ``/of`` for counts and the unit when asked."""
    text = fmt_number(rec.get("value"), rec.get("unit", ""), rec.get("digits"),
                      rec.get("join", " / "))  # fmt: skip
    if rec.get("of") is not None:
        text += f"/{rec['of']}"
    if isinstance(rec.get("value"), (int, float)):
        unit = rec.get("unit", "")
        text += SCALE.get(unit, "") or (SUFFIX.get(unit, "") if with_unit else "")
    return text


def machine_text(machine: Any) -> str:
    if not machine:
        return "machine not recorded"
    if isinstance(machine, str):
        return machine
    threads = machine.get("threads")
    return machine.get("label", "?") + (f", {threads} threads" if threads else
                                        ", threads not recorded")  # fmt: skip


def provenance(rec: dict[str, Any]) -> tuple[str, str, str, str]:
    return (
        f"`{rec['command']}`" if rec.get("command") else "command not recorded",
        machine_text(rec.get("machine")),
        rec.get("date") or "date not recorded",
        rec.get("source") or "source not recorded",
    )


def _run_of(prov: tuple[str, str, str, str]) -> tuple[str, str, str]:
    """A provenance without its date: command, machine, source."""
    return prov[0], prov[1], prov[3]


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def meets(rec: dict[str, Any], peers: list[dict[str, Any]]) -> bool | None:
    """Whether ``rec`` meets its target (None: no target, or nothing to compare with)."""
    target, value = rec.get("target"), rec.get("value")
    if not target or not isinstance(value, (int, float)):
        return None
    op = target.get("op", ">=")
    if op == "all":
        return value == rec.get("of")
    if target.get("ref") == "peer":
        refs = [p["value"] for p in peers
                if p.get("model") == rec.get("model") and p["metric"] == rec["metric"]]  # fmt: skip
        refs = [r for r in refs if isinstance(r, (int, float))]
        return all(OPS[op](value, r) for r in refs) if refs else None
    return OPS[op](value, target["value"])


def _claim_peers(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    peers: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        head = rec.get("headline") or {}
        if head.get("side") == "peer":
            peers.setdefault(head["claim"], []).append(rec)
    return peers


# -- tables ----------------------------------------------------------------------------------


def _unique(items: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def render_table(
    recs: list[dict[str, Any]],
    metrics: list[str] | None = None,
    peers: dict[str, list[dict[str, Any]]] | None = None,
    pivot: str | None = None,
    defaults: tuple[str, str] = ("", ""),
) -> tuple[str, str]:
    """The Markdown table of one block and the lines saying where its figures come from.

    A row per row label, a column per metric (``metrics`` picks and orders them) and one for
    the peer figure beside a metric that has one; ``pivot`` names a row-label column (e.g.
    ``batch``) whose values become columns instead. Where the figures come from: command and
    date, the machine and source where they differ from ``defaults`` (the page's usual ones);
    figures from several runs get a "run" column and a list of the runs.
    """
    peers = peers or {}
    table = recs[0]["table"]
    names = _unique(r["metric"] for r in recs)
    if metrics:
        unknown = [m for m in metrics if m not in names]
        if unknown:
            raise RenderError(f"table {table}: no metric {unknown} in the results")
        names = metrics
        recs = [r for r in recs if r["metric"] in names]
    width = max(len(r["row"]) for r in recs)
    row_header = list(recs[0].get("row_header") or [])
    row_header += [""] * (width - len(row_header))
    cut = None
    if pivot is not None:
        if pivot not in row_header:
            raise RenderError(f"table {table}: no row column {pivot!r} to pivot")
        cut = row_header.index(pivot)
        row_header = row_header[:cut] + row_header[cut + 1 :]

    def split(rec: dict[str, Any]) -> tuple[tuple[str, ...], str | None]:
        row = [*map(str, rec["row"]), *[""] * (width - len(rec["row"]))]
        if cut is None:
            return tuple(row), None
        return tuple(row[:cut] + row[cut + 1 :]), row[cut]

    values = _unique(split(r)[1] for r in recs)
    columns = [(n, v) for n in names for v in values
               if any(r["metric"] == n and split(r)[1] == v for r in recs)]  # fmt: skip

    def title(name: str, value: str | None) -> str:
        if value is None:
            return name
        head = f"{pivot} {value}" if value.isdigit() else value
        return head if len(names) == 1 else f"{name}, {head}"

    peer_titles = {}
    for col in columns:
        first = next((r["peer"] for r in recs
                      if (r["metric"], split(r)[1]) == col and r.get("peer")), None)  # fmt: skip
        if first:
            peer_titles[col] = first.get("label") or first.get("name", "peer")
    # a run is a command on a machine: its re-runs (other dates) are one run, dated from its
    # first date with "(+n more)", as the headline dates them
    provs = _unique(_run_of(provenance(r)) for r in recs)
    dates: dict[tuple[str, str, str], list[str]] = {}
    for rec in recs:
        prov = provenance(rec)
        dates.setdefault(_run_of(prov), []).append(prov[2])
    several = len(provs) > 1
    header = row_header + [h for col in columns for h in (title(*col), peer_titles.get(col)) if h]
    if several:
        header.append("run")
    rows: dict[tuple[Any, ...], dict[tuple[str, str | None], dict[str, Any]]] = {}
    for rec in recs:
        label, value = split(rec)
        rows.setdefault((label, rec.get("run")), {})[(rec["metric"], value)] = rec
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for (label, _), by_column in rows.items():
        cells = list(label)
        for col in columns:
            rec = by_column.get(col)
            text = "–" if rec is None else fmt_value(rec)
            if rec is not None:
                ok = meets(rec, peers.get((rec.get("headline") or {}).get("claim", ""), []))
                text += {True: " ✓", False: " ✗", None: ""}[ok]
                if rec.get("note"):
                    text += f" ({rec['note']})"
            cells.append(text)
            if col in peer_titles:
                peer = rec.get("peer") if rec else None
                if not peer:
                    cells.append("")
                else:
                    head = peer.get("label") or peer.get("name", "peer")
                    named = head != peer_titles[col]
                    cells.append((f"{head}: " if named else "") + fmt_value(peer))
        if several:
            ids = _unique(provs.index(_run_of(provenance(r))) + 1 for r in by_column.values())
            cells.append(", ".join(f"[{i}]" for i in sorted(ids)))
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")

    # the machine and the source most runs share (unless the page's usual ones) are said once
    # above the list; a run on another names its own
    def majority(k: int) -> tuple[str | None, str]:
        counts = collections.Counter(p[k] for p in provs)
        value, n = counts.most_common(1)[0]
        if not several or n <= len(provs) / 2 or value == defaults[k - 1]:
            return None, ""
        return value, value + (" unless given" if len(counts) > 1 else "")

    (machine, machine_text), (source, source_text) = majority(1), majority(2)
    usual = (machine or defaults[0], source or defaults[1])

    def shown(run: tuple[str, str, str]) -> str:
        command, machine, source = run
        when = sorted(set(dates[run]))
        date = when[0] + (f" (+{len(when) - 1} more)" if len(when) > 1 else "")
        parts = [command] + ([machine] if machine != usual[0] else []) + [date]
        return " · ".join(parts + ([source] if source != usual[1] else []))

    if several:
        common = "; ".join(x for x in (machine_text, source_text) if x)
        runs = [f"Runs{f' ({common})' if common else ''}:"]
        runs += [f"- [{i}] " + shown(p) for i, p in enumerate(provs, 1)]
    else:
        runs = ["Run: " + shown(provs[0])]
    return "\n".join(lines), "\n".join(runs)


def _group(records: list[dict[str, Any]], label_of: Callable[[dict[str, Any]], str]) -> str:
    """Figures grouped by label (and unit): one figure as it is, several as a range."""
    groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((label_of(rec), rec.get("unit")), []).append(rec)
    parts = []
    for (label, _), group in groups.items():
        numeric = [r for r in group if isinstance(r.get("value"), (int, float))]
        if len(group) > 1 and len(numeric) == len(group) and not any(r.get("of") for r in group):
            lo = min(group, key=lambda r: r["value"])
            hi = max(group, key=lambda r: r["value"])
            a, b = fmt_value(lo), fmt_value(hi, with_unit=True)
            if a == fmt_value(hi):
                text = b
            else:
                text = f"{a} to {b}" if a[0] in "+-" or b[0] in "+-" else f"{a}–{b}"
        else:
            text = "; ".join(fmt_value(r, with_unit=True) for r in group)
        parts.append(f"{label} {text}" if label else text)
    return "; ".join(parts)


def _headline_run(prov: tuple[str, str, str, str]) -> tuple[str, str, str]:
    """How the headline names a run: command, machine (its label only), date."""
    return prov[0], prov[1].split(",")[0], prov[2]


def headline_runs(records: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """The runs the headline prints in full (each claim's first)."""
    firsts: dict[str, tuple[str, str, str]] = {}
    for rec in records:
        if rec.get("headline"):
            firsts.setdefault(rec["headline"]["claim"], _headline_run(provenance(rec)))
    return set(firsts.values())


def render_headline(records: list[dict[str, Any]]) -> str:
    """One row per claim: our figures, the peer's or paper's beside them, the target and
    whether the figures meet it, and the command, machine and date of the claim's first
    figure (the section's table lists every run)."""
    claims: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        if rec.get("headline"):
            claims.setdefault(rec["headline"]["claim"], []).append(rec)
    if not claims:
        raise RenderError("no record is flagged headline")
    order = sorted(
        claims,
        key=lambda c: min(r["headline"].get("order", 10**9) for r in claims[c]),
    )
    lines = [
        "| claim | ours | compared with | target | verdict | command · machine · date |",
        "|---|---|---|---|---|---|",
    ]
    previous = ""
    for claim in order:
        recs = claims[claim]
        ours = [r for r in recs if r["headline"].get("side") != "peer"]
        theirs = [r for r in recs if r["headline"].get("side") == "peer"]
        label = lambda r: r["headline"].get("label", "")  # noqa: E731
        compared = [_group(theirs, label)] if theirs else []
        embedded: dict[str, list[dict[str, Any]]] = {}
        for rec in ours:
            if rec.get("peer"):
                peer = {**rec["peer"], "headline": rec["headline"]}
                embedded.setdefault(rec["peer"].get("name", "peer"), []).append(peer)
        compared += [f"{name}: {_group(ps, label)}" for name, ps in embedded.items()]
        targets = _unique(r["target"]["text"] for r in ours if r.get("target"))
        checks = [meets(r, theirs) for r in ours if r.get("target")]
        checks = [c for c in checks if c is not None]
        if not checks:
            verdict = "–"
        elif all(checks):
            verdict = "met"
        elif not any(checks):
            verdict = "**not met**"
        else:
            verdict = f"**met on {sum(checks)} of {len(checks)}**"
        runs = _unique(_headline_run(provenance(r)) for r in recs)
        where = " · ".join(runs[0]) + (f" (+{len(runs) - 1} more)" if len(runs) > 1 else "")
        where, previous = ("as above" if where == previous else where), where
        cells = [claim, _group(ours, label), "; ".join(compared) or "–",
                 "; ".join(targets) or "–", verdict, where]  # fmt: skip
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return "\n".join(lines)


def defaults(records: list[dict[str, Any]]) -> tuple[str, str]:
    """The machine and the source most figures share; tables name them only where not."""
    machines = Counter(provenance(r)[1] for r in records)
    sources = Counter(provenance(r)[3] for r in records)
    return machines.most_common(1)[0][0], sources.most_common(1)[0][0]


def render_machines(records: list[dict[str, Any]]) -> str:
    """The machines the figures were measured on, the software versions on each, and the
    machine and source that a table's run line leaves out."""
    machines: dict[str, dict[str, Any]] = {}
    vers: dict[str, dict[str, list[str]]] = {}
    for rec in records:
        m = rec.get("machine")
        if not isinstance(m, dict):
            continue
        label = m.get("label", "?")
        machines.setdefault(label, m)
        for name, version in (rec.get("versions") or {}).items():
            seen = vers.setdefault(label, {}).setdefault(name, [])
            if version not in seen:
                seen.append(version)
    lines = ["| machine | CPU | flags | memory | GPU | versions |", "|---|---|---|---|---|---|"]
    for label, m in machines.items():
        versions = ", ".join(f"{k} {' / '.join(v)}" for k, v in vers.get(label, {}).items())
        cells = [label, m.get("cpu", "?"), m.get("flags", "not recorded"),
                 m.get("ram", "not recorded"), m.get("gpu", "not recorded"),
                 versions or "not recorded"]  # fmt: skip
        lines.append("| " + " | ".join(cell(str(c)) for c in cells) + " |")
    machine, source = defaults(records)
    lines += ["", f"Run lines name the machine and source only where they differ from: {machine}; "
              f"{source}."]  # fmt: skip
    return "\n".join(lines)


# -- the page --------------------------------------------------------------------------------


def render_page(text: str, records: list[dict[str, Any]]) -> str:
    """``text`` with every results block regenerated from ``records``."""
    records = current(records)
    tables: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        tables.setdefault(rec["table"], []).append(rec)
    peers = _claim_peers(records)
    usual = defaults(records)
    in_headline = headline_runs(records) if "<!-- results:headline -->" in text else set()
    opened = re.findall(r"<!-- results:([A-Za-z0-9_.-]+)", text)
    matched = [m.group("name") for m in BLOCK.finditer(text)]
    if opened != matched:
        unclosed = [n for n in opened if n not in matched]
        raise RenderError(f"results blocks without their closing marker: {unclosed}")

    last_run = [""]  # a block whose runs are the previous block's says "as above"

    def replace(match: re.Match[str]) -> str:
        name, opts = match.group("name"), match.group("opts")
        options = dict(re.findall(r'(\w+)="([^"]*)"', opts))
        if name == "headline":
            body = render_headline(records)
        elif name == "machines":
            body = render_machines(records)
        elif name in tables:
            view = VIEWS.get(name, {})
            metrics = options["metrics"].split("|") if "metrics" in options else None
            if metrics is None and "metrics" in view:  # a view shows what of it the results hold
                present = {r["metric"] for r in tables[name]}
                metrics = [m for m in view["metrics"] if m in present] or None
            pivot = options.get("pivot", view.get("pivot"))
            body, runs = render_table(tables[name], metrics, peers, pivot, usual)
            provs = _unique(provenance(r) for r in tables[name])
            if runs == last_run[0]:
                body += "\n\nRun: as above."
            elif len(provs) == 1 and _headline_run(provs[0]) in in_headline:
                body += "\n\nRun: as in the headline."
            else:
                body += "\n\n" + runs
            last_run[0] = runs
        else:
            raise RenderError(f"<!-- results:{name} -->: no record has table {name!r}")
        return f"<!-- results:{name}{opts} -->\n{body}\n<!-- /results:{name} -->"

    return BLOCK.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--page", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the page differs from what the results "
                        "render")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        old = args.page.read_text(encoding="utf-8")
        new = render_page(old, load(args.results_dir))
    except (OSError, RenderError) as exc:
        print(f"render.py: error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if new == old:
            return 0
        diff = difflib.unified_diff(
            old.splitlines(), new.splitlines(), str(args.page), "rendered", lineterm=""
        )
        print("\n".join(list(diff)[:60]))
        print(f"{args.page} differs from its results; run: python benchmarks/render.py",
              file=sys.stderr)  # fmt: skip
        return 1
    if new != old:
        args.page.write_text(new, encoding="utf-8")
        print(f"{args.page}: tables regenerated ({len(new):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
