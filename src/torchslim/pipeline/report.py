"""The compression report: one row per stage result, measured the same way, as Markdown, JSON
and one self-contained HTML page with plots."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torchslim.tables import markdown_table
from torchslim.train.checkpoint import atomic_write_text

# The report's name of each task's metric (what ``StageRow.accuracy`` holds). Text recipes
# (task unlabelled) have no labels: their metric is the mean cosine between each evaluation
# sentence's embedding and the recipe's starting model's (``StageRow.fidelity`` has the rest).
METRIC_NAMES = {"classification": "top-1", "detection": "mAP", "segmentation": "mIoU",
                "unlabelled": "cosine"}  # fmt: skip
FRACTIONS = frozenset({"cosine"})  # metrics shown as they are, not as percentages


def metric_text(value: float | None, metric: str) -> str:
    """A metric value as the report writes it: a percentage, or a cosine as it is.

    Example:
        >>> metric_text(0.91234, "top-1"), metric_text(0.99871, "cosine"), metric_text(None, "mAP")
        ('91.23%', '0.9987', '-')
    """
    if value is None:
        return "-"
    return f"{value:.4f}" if metric in FRACTIONS else f"{100 * value:.2f}%"


def fidelity_fields(pytorch: Any, ort: Any) -> dict[str, float]:
    """A text row's :class:`~torchslim.train.sentence.EmbeddingFidelity` figures, of the
    PyTorch model and (``ort_``) of its ONNX file in ONNX Runtime, as plain data.

    Example:
        >>> from torchslim.train.sentence import EmbeddingFidelity
        >>> f = EmbeddingFidelity(0.98, 0.995, 0.9, 10)
        >>> fidelity_fields(f, f)["ort_top10_overlap"]
        0.9
    """
    out: dict[str, float] = {}
    for prefix, fid in (("", pytorch), ("ort_", ort)):
        out.update({f"{prefix}cosine_min": round(fid.cosine_min, 6),
                    f"{prefix}cosine_mean": round(fid.cosine_mean, 6),
                    f"{prefix}top{fid.k}_overlap": round(fid.topk_overlap, 6)})  # fmt: skip
    return out


@dataclass
class StageRow:
    """What one stage's model measures: accuracy (PyTorch and ONNX Runtime), size, speed."""

    stage: str
    type: str
    input: str
    # the metric (top-1, mAP, mIoU, cosine) of the PyTorch model (fake-quant for quantized
    # ones) and of the exported ONNX file in ONNX Runtime
    accuracy: float | None
    ort_accuracy: float | None
    params: int
    macs: int
    onnx_bytes: int
    int8: bool
    latency_ms: dict[int, float] = field(default_factory=dict)  # batch size -> ORT median ms
    seconds: float = 0.0  # wall time of the stage itself
    channels: dict[str, list[int]] = field(default_factory=dict)  # prune: layer -> [before, after]
    sensitivity: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> ratio->acc
    # prune with reconstruct: layer -> [relative output error before, after the refit]
    reconstruct: dict[str, list[float]] = field(default_factory=dict)
    # search: the chosen ratios, its score and the trajectory [[trial, score, MACs ratio]...]
    search: dict[str, Any] = field(default_factory=dict)
    # text: embeddings against the starting model's (cosine min/mean, top-10 neighbour
    # overlap), of the PyTorch model and (ort_...) of the ONNX file; see fidelity_fields
    fidelity: dict[str, float] = field(default_factory=dict)

    @property
    def top1(self) -> float | None:
        """The deployed accuracy: ONNX Runtime's when measured, else PyTorch's."""
        return self.ort_accuracy if self.ort_accuracy is not None else self.accuracy


@dataclass
class Report:
    """Rows of every finished stage and their ratios to the baseline row."""

    title: str
    baseline: str | None
    rows: list[StageRow] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)  # export stage -> file
    metric: str = "top-1"  # what ``accuracy`` measures: top-1, mAP (detection), mIoU

    def base(self) -> StageRow | None:
        return next((r for r in self.rows if r.stage == self.baseline), None)

    def ratios(self, row: StageRow) -> dict[str, float | None]:
        """Accuracy change (points; a cosine's plain difference), file/params/MACs reduction
        (x), latency speed-ups (x)."""
        b = self.base()
        if b is None:
            return {}
        out: dict[str, float | None] = {
            "top1_change": None
            if row.top1 is None or b.top1 is None
            else (1 if self.metric in FRACTIONS else 100) * (row.top1 - b.top1),
            "smaller": b.onnx_bytes / row.onnx_bytes if row.onnx_bytes else None,
            "params_ratio": row.params / b.params if b.params else None,
            "macs_ratio": row.macs / b.macs if b.macs else None,
        }
        for bs, ms in row.latency_ms.items():
            base_ms = b.latency_ms.get(bs)
            out[f"speedup_b{bs}"] = base_ms / ms if base_ms and ms else None
        return out

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for r in self.rows:
            d = asdict(r)
            d["top1"] = r.top1
            d["vs_baseline"] = self.ratios(r)
            rows.append(d)
        return {"title": self.title, "baseline": self.baseline, "metric": self.metric,
                "rows": rows, "artifacts": self.artifacts}  # fmt: skip

    def table(self) -> str:
        """The Markdown table of all rows (what ``torchslim compress`` prints)."""
        sizes = sorted({bs for r in self.rows for bs in r.latency_ms}, key=int)
        m = self.metric
        texts = any(r.fidelity for r in self.rows)
        head = ["stage", "type", f"{m} ORT", f"{m} PyTorch", f"Δ {m}"]
        head += ["min cosine ORT", "top-10 ORT"] if texts else []
        head += ["params", "MACs", "ONNX file", "smaller"]
        head += [f"ORT b{bs} ms (speed-up)" for bs in sizes]
        rows = []
        for r in self.rows:
            q = self.ratios(r)
            change = q.get("top1_change")
            cells = [
                r.stage + (" (baseline)" if r.stage == self.baseline else ""),
                r.type + (" int8" if r.int8 else ""),
                metric_text(r.ort_accuracy, m),
                metric_text(r.accuracy, m),
                "-" if change is None else f"{change:+.4f}" if m in FRACTIONS else _signed(change),
            ]
            if texts:
                f = r.fidelity
                cells += [metric_text(f.get("ort_cosine_min"), "cosine"),
                          _pct(f.get("ort_top10_overlap"))]  # fmt: skip
            cells += [
                f"{r.params / 1e6:.3f} M",
                f"{r.macs / 1e6:.2f} M",
                f"{r.onnx_bytes / 2**20:.3f} MiB",
                _times(q.get("smaller")),
            ]
            for bs in sizes:
                ms = r.latency_ms.get(bs)
                cells.append("-" if ms is None else f"{ms:.2f} ({_times(q.get(f'speedup_b{bs}'))})")
            rows.append(cells)
        return "\n".join(markdown_table(head, rows))

    def __str__(self) -> str:
        return "\n".join([self.table(), *self.warnings()])

    def warnings(self) -> list[str]:
        """A line for every row with fewer MACs than the baseline that is no faster in ONNX
        Runtime at some batch size: a compressed model users would not want.

        Example:
            >>> base = StageRow("b", "train", "", 0.9, 0.9, 10, 100, 40, False, {1: 1.0})
            >>> slow = StageRow("p", "prune", "b", 0.9, 0.9, 5, 50, 20, False, {1: 1.1})
            >>> Report("r", "b", [base, slow]).warnings()[0][:54]
            'warning: p has 0.50 of the baseline MACs but runs at 0'
        """
        b, out = self.base(), []
        if b is None:
            return out
        for r in self.rows:
            q = self.ratios(r)
            slow = {bs: q.get(f"speedup_b{bs}") for bs in r.latency_ms}
            slow = {bs: v for bs, v in slow.items() if v is not None and v < 1.0}
            macs = q.get("macs_ratio")
            if r is b or not slow or macs is None or macs >= 0.95 or r.int8:
                continue
            at = ", ".join(f"{v:.2f}x at batch {bs}" for bs, v in sorted(slow.items()))
            out.append(
                f"warning: {r.stage} has {macs:.2f} of the baseline MACs but runs at {at} of "
                "its speed in ONNX Runtime; keep channel counts at multiples of the CPU's "
                "vector width (prune's default round_to: 8 on AVX2, 16 on AVX-512)"
            )
        return out

    def to_markdown(self) -> str:
        parts = [f"# {self.title}", "", self.table(), "", *self.warnings()]
        if parts[-1] != "":
            parts.append("")
        if self.artifacts:
            parts += ["Files:", ""] + [f"- {k}: `{v}`" for k, v in self.artifacts.items()] + [""]
        parts.append(
            f"{self.metric} ORT: the exported ONNX file in ONNX Runtime (int8 kernels for int8 "
            f"rows); Δ {self.metric} in points and the ratios are against the baseline row. "
            "Latency: median ORT time per batch; at the end of a run every row is timed "
            "again, round-robin, and the median of the rounds is reported."
        )
        if self.metric == "cosine":
            parts.append(
                "\ncosine: no labels, so each row is compared with the recipe's starting model: "
                "the mean cosine between the two models' sentence embeddings (token states "
                "mean-pooled over the mask) of every evaluation sentence (never a training "
                "one), min cosine its worst sentence, top-10 the share of each sentence's 10 "
                "nearest other sentences that both models find (ORT: the exported file)."
            )
        return "\n".join(parts) + "\n"

    def write(self, out_dir: str | Path, html_page: bool = True) -> dict[str, Path]:
        """Write report.md, report.json and (optionally) report.html into ``out_dir``."""
        out = Path(out_dir)
        files = {
            "md": atomic_write_text(self.to_markdown(), out / "report.md"),
            "json": atomic_write_text(json.dumps(self.to_dict(), indent=2), out / "report.json"),
        }
        if html_page:
            files["html"] = atomic_write_text(self.to_html(), out / "report.html")
        return files

    # -- HTML ---------------------------------------------------------------------------------
    def to_html(self) -> str:
        """One self-contained page: the table and the plots as inline PNG images."""
        figures = [(title, _png(fig)) for title, fig in self._figures()]
        body = [f"<h1>{html.escape(self.title)}</h1>", _html_table(self)]
        for title, data in figures:
            body.append(f'<figure><img alt="{html.escape(title)}" '
                        f'src="data:image/png;base64,{data}"><figcaption>'
                        f"{html.escape(title)}</figcaption></figure>")  # fmt: skip
        style = ("body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:"
                 "collapse}td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}"
                 "td:first-child,th:first-child{text-align:left}figure{display:inline-block;"
                 "margin:1em}img{max-width:560px}")  # fmt: skip
        return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>"
                f"{html.escape(self.title)}</title><style>{style}</style></head><body>\n"
                + "\n".join(body) + "\n</body></html>\n")  # fmt: skip

    def _figures(self) -> list[tuple[str, Any]]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figs = []
        scale, unit = (1, "") if self.metric in FRACTIONS else (100, " (%)")
        rows = [r for r in self.rows if r.top1 is not None]
        b1 = [r for r in rows if 1 in r.latency_ms]
        for title, xs, label in (
            ("accuracy vs ONNX file size", rows, "ONNX file (MiB)"),
            ("accuracy vs ORT latency (batch 1)", b1, "latency at batch 1 (ms)"),
        ):
            if not xs:
                continue
            fig, ax = plt.subplots(figsize=(5.5, 4))
            for r in xs:
                x = r.onnx_bytes / 2**20 if "size" in title else r.latency_ms[1]
                ax.scatter([x], [scale * r.top1], s=40)
                ax.annotate(r.stage, (x, scale * r.top1), textcoords="offset points",
                            xytext=(4, 4), fontsize=8)  # fmt: skip
            ax.set_xlabel(label)
            ax.set_ylabel(f"{self.metric}{unit}")
            ax.set_title(title)
            ax.grid(alpha=0.3)
            figs.append((title, fig))
        for r in self.rows:
            if r.channels:
                names = list(r.channels)
                kept = [after / before if before else 1.0 for before, after in r.channels.values()]
                fig, ax = plt.subplots(figsize=(max(5.5, 0.18 * len(names)), 4))
                ax.bar(range(len(names)), kept)
                ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
                ax.set_ylabel("channels kept (fraction)")
                ax.set_ylim(0, 1.05)
                ax.set_title(f"channels kept per layer: {r.stage}")
                fig.tight_layout()
                figs.append((f"channels kept per layer ({r.stage})", fig))
            if r.sensitivity:
                fig, ax = plt.subplots(figsize=(5.5, 4))
                for group, curve in r.sensitivity.items():
                    pts = sorted((float(k), v) for k, v in curve.items())
                    ax.plot([p for p, _ in pts], [100 * a for _, a in pts], marker=".", label=group)
                ax.set_xlabel("pruning ratio of the group alone")
                ax.set_ylabel(f"{self.metric} (%)")
                ax.set_title(f"sensitivity: {r.stage}")
                if len(r.sensitivity) <= 12:
                    ax.legend(fontsize=6)
                figs.append((f"sensitivity curves ({r.stage})", fig))
            if r.search.get("trials"):
                figs.append(_search_figure(r, plt))
            if r.search.get("bits"):
                figs.append(_bits_figure(r, plt))
        return figs


def _search_figure(row: StageRow, plt: Any) -> tuple[str, Any]:
    """A search stage's trajectory (score per trial, best so far) and its candidates' score
    against their MACs (a bits search: bytes), the chosen one marked."""
    trials = sorted(row.search["trials"])
    numbers, scores, macs = zip(*trials, strict=True)
    best = [max(scores[: i + 1]) for i in range(len(scores))]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(numbers, scores, ".", alpha=0.6, label="candidate")
    left.plot(numbers, best, "-", label="best so far")
    left.set_xlabel("trial")
    left.set_ylabel("search score (% on training images)")
    left.legend(fontsize=7)
    right.scatter(macs, scores, s=12, alpha=0.6, label="candidate")
    front = _front(list(zip(macs, scores, strict=True)))
    right.step([p[0] for p in front], [p[1] for p in front], where="post", color="C2",
               label="Pareto front")  # fmt: skip
    cost = row.search.get("cost", "macs_ratio")  # a bits search: "bytes_ratio"
    right.scatter([row.search[cost]], [row.search["score"]], s=60, marker="*",
                  color="C3", label="chosen")  # fmt: skip
    right.set_xlabel(f"{cost.removesuffix('_ratio')} ratio (predicted)")
    right.set_ylabel("search score (%)")
    right.legend(fontsize=7)
    fig.suptitle(f"search: {row.stage}")
    fig.tight_layout()
    return f"search trajectory and candidates ({row.stage})", fig


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, score) points no other beats on both (lower cost, higher score), by cost.

    Example:
        >>> _front([(0.5, 90.0), (0.4, 91.0), (0.3, 80.0), (0.45, 85.0)])
        [(0.3, 80.0), (0.4, 91.0)]
    """
    out: list[tuple[float, float]] = []
    for cost, score in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or score > out[-1][1]:
            out.append((cost, score))
    return out


def _bits_figure(row: StageRow, plt: Any) -> tuple[str, Any]:
    """A bits / joint search's chosen weight bits per layer (and input bits, if searched)."""
    bits = row.search["bits"]
    names = list(bits)
    fig, ax = plt.subplots(figsize=(max(5.5, 0.18 * len(names)), 4))
    ax.bar(range(len(names)), [bits[n] for n in names], label="weight bits")
    acts = row.search.get("act_bits")
    if acts:
        ax.plot(range(len(names)), [acts[n] for n in names], "o", color="C1",
                label="input activation bits")  # fmt: skip
        ax.legend(fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_ylabel("bits (32: float)")
    ax.set_title(f"bits per layer: {row.stage}")
    fig.tight_layout()
    return f"bits per layer ({row.stage})", fig


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _html_table(report: Report) -> str:
    lines = report.table().splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells[2:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _signed(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f}"


def _times(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def rows_from_json(data: Sequence[dict[str, Any]]) -> list[StageRow]:
    """Rows read back from ``report.json`` / a stage's ``done.json`` (resumed runs)."""
    names = {f for f in StageRow.__dataclass_fields__}
    out = []
    for d in data:
        row = StageRow(**{k: v for k, v in d.items() if k in names})
        row.latency_ms = {int(k): v for k, v in row.latency_ms.items()}
        out.append(row)
    return out
