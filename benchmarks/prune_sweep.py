"""50% channel pruning of every torchvision classification model, torchslim beside Torch-Pruning.

Usage:
    python benchmarks/prune_sweep.py [--models all|tasks|resnet18,vit_b_16,ssd300_vgg16]
        [--tools torchslim,torch-pruning] [--out bench-out/sweep/results.jsonl]
        [--timeout 900] [--resume]
    python benchmarks/prune_sweep.py --summary [--out bench-out/sweep/results.jsonl]
        [--results benchmarks/results/prune_sweep.jsonl]

Target (issue 3): 80/80 models prune to 50% of the channels, run and keep their output shape;
torchslim's pruning time at most half of Torch-Pruning's on the same model. ``--models tasks``
(issue 18) sweeps torchvision's other models - detection, segmentation, video, optical flow and
the quantizable classifiers - each on its own input (detectors: a list of one 3x320x320 image
in eval mode; video: 16 frames; RAFT: two 3x128x128 images); a detector's output keeps its
structure (list of dicts with the same keys and tensor ranks; the number of boxes may change).

Every (model, tool) pair runs in a fresh subprocess (a crash or a huge model cannot take the sweep
down, memory is returned, a per-pair timeout is enforced) and appends one JSON line to --out.
Both tools are measured the same way: parameters and MACs with ``torchslim.analyze`` before and
after, on the same seeded model and input. ``prune_seconds`` times the pruning call only:
``ts.prune(model, x, {"ratio": 0.5})`` for torchslim (its before/after report and forward check
included), pruner construction (DependencyGraph) plus ``pruner.step()`` for Torch-Pruning; for
both, ``gc.collect()`` runs just before the timer starts, so a full collection of garbage left
by model building cannot land inside one tool's timing by chance. torchslim's report (MACs and
parameters after, predicted from its trace) is checked against the measurement.
Torch-Pruning (the project's ``bench`` extra) is set up as its README and torchvision example do:
L2 magnitude importance, ratio 0.5, the final 1000-way ``nn.Linear`` ignored, ``num_heads`` for
``nn.MultiheadAttention``, and ``hidden_dim`` reset on torchvision ViTs after the step.

When a sweep ends, its figures (the summary's counts and ratios, Torch-Pruning's failures and
the per-model rows, over everything in --out) are appended to --results (default
benchmarks/results/prune_sweep.jsonl; tables ``prune_sweep_*``, or ``prune_sweep_subset_*`` when
not all models were swept) for benchmarks/render.py; ``--summary`` appends them only when
--results is given.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import inspect
import json
import math
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timm_models as timm_models
from _results import RESULTS_DIR, Results

# Figures here cut single channels (round_to 1): pruning's default round_to is the CPU's
# vector width, so the run pins it (a round_to in a config, or the variable set, wins).
os.environ.setdefault("TORCHSLIM_VECTOR_FLOATS", "1")

TOOLS = ("torchslim", "torch-pruning")
DEFAULT_OUT = "bench-out/sweep/results.jsonl"
RATIO = 0.5


# ----------------------------------------------------------------------------------------------
# worker: one model, one tool, in this process
# ----------------------------------------------------------------------------------------------


TASKS = ("detection", "segmentation", "video", "optical_flow", "quantization")


def family(name: str) -> str:
    """The torchvision sub-package of a model ("classification" for torchvision.models), or
    ``timm`` for a ``timm:ARCH`` name."""
    import torchvision

    if timm_models.is_timm(name):
        return "timm"

    for task in TASKS:
        if name in torchvision.models.list_models(module=getattr(torchvision.models, task)):
            return task
    return "classification"


def _input_size(name: str, size: int | None) -> int:
    if size is not None:
        return size
    return 299 if name.endswith("inception_v3") else 224


def _build(name: str) -> Any:
    import torchvision

    if timm_models.is_timm(name):
        return timm_models.build(name)

    kwargs: dict[str, Any] = {"weights": None}
    task = family(name)
    if task in ("detection", "segmentation"):
        kwargs["weights_backbone"] = None
    if task == "quantization":
        kwargs["quantize"] = False
    if name.endswith(("googlenet", "inception_v3")):
        kwargs.update(aux_logits=False, init_weights=False)
    return torchvision.models.get_model(name, **kwargs).eval()


def _example(name: str, size: int | None) -> tuple[Any, ...]:
    """The model's positional inputs: one image, a list of one (detectors), two (RAFT) or a
    clip of 16 frames (video)."""
    import torch

    if timm_models.is_timm(name):
        return timm_models.example(name)
    task, s = family(name), _input_size(name, size)
    if task == "detection":
        side = 300 if name.startswith("ssd300") else 320
        return ([torch.rand(3, side, side)],)
    if task == "optical_flow":
        return (torch.rand(1, 3, 128, 128), torch.rand(1, 3, 128, 128))
    if task == "video":
        side = 112 if name in ("r3d_18", "mc3_18", "r2plus1d_18") else 224
        return (torch.randn(1, 3, 16, side, side),)
    return (torch.randn(1, 3, s, s),)


def _outputs_equal(a: Any, b: Any) -> bool:
    import torch

    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_outputs_equal(u, v) for u, v in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_outputs_equal(a[k], b[k]) for k in a)
    return a == b


def _round_trip(model: Any, x: tuple[Any, ...]) -> bool:
    """``ts.save`` then ``ts.load`` (no registration, no spec): identical outputs."""
    import torch

    import torchslim as ts

    with tempfile.TemporaryDirectory() as tmp:
        ts.save(model, Path(tmp) / "model.pt")
        loaded = ts.load(Path(tmp) / "model.pt").eval()
    with torch.no_grad():
        return _outputs_equal(model(*x), loaded(*x))


def _describe(x: Any) -> Any:
    import torch

    if isinstance(x, torch.Tensor):
        return list(x.shape)
    return [_describe(v) for v in x] if isinstance(x, (list, tuple)) else None


def _shape(out: Any, counts_vary: bool = False) -> Any:
    """The output's structure: tensor shapes inside lists, tuples and dicts. ``counts_vary``
    (detectors): the number of boxes depends on the scores, so a tensor's first dimension
    is left out."""
    import torch

    if isinstance(out, torch.Tensor):
        shape = list(out.shape)
        return [len(shape), shape[1:]] if counts_vary else shape
    if isinstance(out, (tuple, list)):
        if out and isinstance(out[0], torch.Tensor) and type(out).__name__ != "list":
            return list(out[0].shape)  # e.g. GoogLeNetOutputs / InceptionOutputs
        return [_shape(o, counts_vary) for o in out]
    if isinstance(out, dict):
        return {k: _shape(v, counts_vary) for k, v in out.items()}
    return None


def _output_layers(model: Any, name: str) -> list[Any]:
    """What Torch-Pruning is told to leave alone, as its examples do: the final classifier
    (a classifier's 1000-way Linear, a video model's 400-way one), a segmentation model's
    per-class convolutions, a detector's heads (everything under ``head``/``roi_heads``/
    ``rpn``)."""
    from torch import nn

    task = family(name)
    if task == "timm":
        return timm_models.classifier_layers(model)
    if task == "detection":
        heads = ("head", "roi_heads", "rpn")
        return [m for n, m in model.named_modules()
                if n.split(".")[0] in heads and not list(m.children())]  # fmt: skip
    if task == "segmentation":
        return [m for n, m in model.named_modules()
                if isinstance(m, nn.Conv2d) and m.out_channels == 21]  # fmt: skip
    if task == "optical_flow":
        return []
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)
               and m.out_features in (1000, 400)]  # fmt: skip
    return linears[-1:]


def _error(stage: str, exc: BaseException) -> dict[str, str]:
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    return {
        "error": f"{stage}: {type(exc).__name__}: {first}"[:500],
        "error_type": type(exc).__name__,
    }


def _prune_torchslim(model: Any, x: Any) -> dict[str, Any]:
    import torchslim as ts

    gc.collect()  # as for Torch-Pruning: no garbage left over from before lands in the timing
    start, cpu = time.perf_counter(), time.process_time()
    ts.prune(model, x, {"ratio": RATIO})
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    report = ts.report(model, "prune")  # predicted from the trace; run_pair checks it
    return {
        "prune_seconds": seconds,
        "prune_cpu_seconds": cpu_seconds,
        "report_macs_after": report.macs_after,
        "report_params_after": report.params_after,
    }


def _prune_torch_pruning(model: Any, x: Any, name: str) -> dict[str, Any]:
    import torch_pruning as tp
    from torch import nn
    from torchvision.models.vision_transformer import VisionTransformer

    # Names moved between Torch-Pruning releases: take whichever the installed one has.
    importance_cls = getattr(tp.importance, "GroupMagnitudeImportance", None)
    importance_cls = importance_cls or tp.importance.MagnitudeImportance
    pruner_cls = getattr(tp.pruner, "BasePruner", None) or tp.pruner.MagnitudePruner
    params = inspect.signature(pruner_cls.__init__).parameters
    ratio_kw = "pruning_ratio" if "pruning_ratio" in params else "ch_sparsity"

    ignored = _output_layers(model, name)
    num_heads = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    if timm_models.is_timm(name):
        num_heads.update(timm_models.tp_num_heads(model))
    kwargs: dict[str, Any] = {ratio_kw: RATIO, "ignored_layers": ignored}
    if num_heads:
        kwargs["num_heads"] = num_heads

    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    pruner = pruner_cls(model, x, importance=importance_cls(p=2), **kwargs)
    pruner.step()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    notes = []
    if isinstance(model, VisionTransformer):
        # torchvision's ViT reshapes with a stored hidden_dim; Torch-Pruning's torchvision
        # example resets it after the step, so do the same (outside the timed region).
        model.hidden_dim = model.conv_proj.out_channels
        notes.append("hidden_dim reset after step (as Torch-Pruning's torchvision example)")
    if timm_models.is_timm(name):
        timm_models.tp_after_step(model)  # outside the timed region, as its timm example
    return {
        "prune_seconds": seconds,
        "prune_cpu_seconds": cpu_seconds,
        "tp_ignored": [n for n, m in model.named_modules() if m in ignored],
        "tp_num_heads": len(num_heads),
        "notes": notes,
    }


def _source_version() -> str:
    """The checkout's commit, with "+dirty" where src/ has uncommitted changes (shared tree)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "?"
    return (head or "?") + ("+dirty" if dirty else "")


def _prune(tool: str, model: Any, x: Any, name: str) -> dict[str, Any]:
    if tool == "torchslim":
        return _prune_torchslim(model, x)
    if tool == "torch-pruning":
        return _prune_torch_pruning(model, x, name)
    raise ValueError(f"unknown tool {tool!r}")


def run_pair(
    name: str, tool: str, size: int | None, threads: int, repeat: int = 1
) -> dict[str, Any]:
    """Build, measure, prune, measure again; never raises (errors are recorded).

    With ``repeat`` > 1 the pruning call is first timed on ``repeat - 1`` fresh copies of the
    model; ``prune_seconds`` is then the minimum over all runs (``prune_seconds_runs`` has each).
    """
    import torch
    import torchvision

    import torchslim as ts

    t_start = time.perf_counter()
    x = _example(name, size)
    vary = family(name) == "detection"
    rec: dict[str, Any] = {
        "model": name,
        "tool": tool,
        "ok": False,
        "error": None,
        "error_type": None,
        "family": family(name),
        "input": _describe(x),
        "threads": threads,
        "loadavg_start": round(os.getloadavg()[0], 2),
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torchslim_source": _source_version(),
    }
    if tool == "torch-pruning":
        import torch_pruning as tp

        rec["torch_pruning"] = getattr(tp, "__version__", "?")
    torch.set_num_threads(threads)
    stage = "build"
    try:
        torch.manual_seed(0)
        model = _build(name)
        stage = "forward-before"
        with torch.no_grad():
            rec["out_shape_before"] = _shape(model(*x), vary)
        stage = "analyze-before"
        before = ts.analyze(model, x)
        rec["params_before"], rec["macs_before"] = before.params, before.macs
        stage = "prune"
        runs = []
        for _ in range(repeat - 1):
            torch.manual_seed(0)
            extra = _build(name)
            runs.append(_prune(tool, extra, x, name))
            del extra
        runs.append(_prune(tool, model, x, name))
        rec.update(runs[-1])
        if repeat > 1:
            rec["prune_seconds_runs"] = [r["prune_seconds"] for r in runs]
            rec["prune_cpu_seconds_runs"] = [r["prune_cpu_seconds"] for r in runs]
            rec["prune_seconds"] = min(rec["prune_seconds_runs"])
            rec["prune_cpu_seconds"] = min(rec["prune_cpu_seconds_runs"])
        stage = "forward-after"
        rec["forward_ok"] = False
        with torch.no_grad():
            rec["out_shape_after"] = _shape(model(*x), vary)
        rec["forward_ok"] = True
        rec["shape_ok"] = rec["out_shape_after"] == rec["out_shape_before"]
        stage = "analyze-after"
        after = ts.analyze(model, x)
        rec["params_after"], rec["macs_after"] = after.params, after.macs
        rec["params_ratio"] = after.params / before.params
        rec["macs_ratio"] = after.macs / before.macs if before.macs else None
        rec["pruned"] = after.params < before.params
        if "report_macs_after" in rec:  # torchslim's report must equal the measurement
            rec["report_matches"] = (rec["report_macs_after"], rec["report_params_after"]) == (
                after.macs,
                after.params,
            )
        if tool == "torchslim" and rec["pruned"] and rec["shape_ok"]:
            stage = "save-load"
            rec["roundtrip_ok"] = _round_trip(model, x)
        if not rec["shape_ok"]:
            rec["error"] = (
                f"output shape changed: {rec['out_shape_before']} -> {rec['out_shape_after']}"
            )
            rec["error_type"] = "ShapeMismatch"
        elif not rec["pruned"]:
            rec["error"], rec["error_type"] = "nothing was pruned", "NotPruned"
        rec["ok"] = rec["shape_ok"] and rec["pruned"]
    except Exception as exc:
        rec.update(_error(stage, exc))
        rec["traceback_tail"] = traceback.format_exc().strip().splitlines()[-6:]
    rec["loadavg_end"] = round(os.getloadavg()[0], 2)
    rec["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    rec["worker_seconds"] = round(time.perf_counter() - t_start, 2)
    return rec


# ----------------------------------------------------------------------------------------------
# driver: one subprocess per pair
# ----------------------------------------------------------------------------------------------


def _load(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            if line.strip():
                rows.append(json.loads(line))
    return rows


def _log_tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _rss_bytes(pid: int) -> int:
    """Resident memory of a process from /proc (0 where unavailable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _wait(proc: subprocess.Popen, timeout: float, max_rss: float) -> tuple[int | None, str, int]:
    """Wait for the worker; kill it past ``timeout`` s or ``max_rss`` bytes of resident memory.

    Returns (exit code or None if killed, why it was killed, peak RSS seen).
    """
    deadline = time.monotonic() + timeout
    peak = 0
    while True:
        try:
            return proc.wait(timeout=0.5), "", peak
        except subprocess.TimeoutExpired:
            pass
        peak = max(peak, _rss_bytes(proc.pid))
        why = ""
        if time.monotonic() > deadline:
            why = "timeout"
        elif peak > max_rss:
            why = "memory"
        if why:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None, why, peak


def _spawn(name: str, tool: str, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    log_path = logs / f"{name}.{tool}.log"
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        result_path = Path(tmp.name)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--tool", tool]
    cmd += ["--threads", str(args.threads), "--result", str(result_path)]
    cmd += ["--repeat", str(args.repeat)]
    if args.size is not None:
        cmd += ["--size", str(args.size)]
    start = time.perf_counter()
    rec: dict[str, Any] | None = None
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        rc, killed, peak = _wait(proc, args.timeout, args.max_rss_gb * 2**30)
    wall = round(time.perf_counter() - start, 2)
    try:
        if result_path.stat().st_size:
            rec = json.loads(result_path.read_text())
    finally:
        result_path.unlink(missing_ok=True)
    if rec is None:
        rec = {"model": name, "tool": tool, "ok": False}
        if killed == "timeout":
            rec["error"] = f"timeout: killed after {args.timeout:.0f} s"
            rec["error_type"] = "Timeout"
        elif killed == "memory":
            rec["error"] = (
                f"memory: killed at {peak / 2**30:.1f} GiB resident (limit {args.max_rss_gb} GiB) "
                f"after {time.perf_counter() - start:.0f} s"
            )
            rec["error_type"] = "MemoryLimit"
        else:
            why = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
            rec["error"] = f"worker crashed ({why}): {_log_tail(log_path)}"
            rec["error_type"] = "WorkerCrash"
    rec["subprocess_seconds"] = wall
    rec["driver_peak_rss_mb"] = round(peak / 2**20)
    return rec


def sweep(args: argparse.Namespace) -> None:
    import torchvision

    every = torchvision.models.list_models(module=torchvision.models)
    if args.models in ("all", "tasks"):
        names = every if args.models == "all" else sorted(set(torchvision.models.list_models())
                                                          - set(every))  # fmt: skip
    elif args.models == "timm":
        chosen = timm_models.load_list(Path(args.timm_list))["families"]
        names = sorted(f["name"] for f in chosen.values())
    else:
        names = [m.strip() for m in args.models.split(",")]
    known = set(torchvision.models.list_models())
    unknown = sorted(n for n in set(names) - known if not timm_models.is_timm(n))
    if unknown:
        raise SystemExit(f"unknown models: {', '.join(unknown)}")
    tools = [t.strip() for t in args.tools.split(",")]
    bad = sorted(set(tools) - set(TOOLS))
    if bad:
        raise SystemExit(f"unknown tools: {', '.join(bad)} (choose from {', '.join(TOOLS)})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    logs = out.parent / "logs"
    logs.mkdir(exist_ok=True)
    # A torchslim record from before the save/load check is run again.
    done = {(r.get("model"), r.get("tool")) for r in _load(out)
            if r.get("tool") != "torchslim" or not r.get("ok") or "roundtrip_ok" in r
            } if args.resume else set()  # fmt: skip
    if not args.resume and out.exists() and out.stat().st_size:
        print(f"note: appending to existing {out} (the last line per pair wins in --summary)")
    pairs = [(m, t) for m in names for t in tools if (m, t) not in done]
    print(f"{len(pairs)} pairs to run ({len(done)} already in {out}), timeout {args.timeout} s")
    res = _results(args)
    for i, (name, tool) in enumerate(pairs, 1):
        rec = _spawn(name, tool, args, logs)
        with out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        secs = rec.get("prune_seconds")
        print(
            f"[{i}/{len(pairs)}] {name:<20} {tool:<14} ok={rec['ok']!s:<5} "
            f"prune={'-' if secs is None else f'{secs:.2f}s'} "
            f"MACs={_fmt(rec.get('macs_ratio'))} params={_fmt(rec.get('params_ratio'))} "
            f"wall={rec['subprocess_seconds']:.0f}s {rec.get('error') or ''}",
            flush=True,
        )
    if res is not None:
        n = _write(out, res, every)
        print(f"{n} figures appended to {res.path}")


# ----------------------------------------------------------------------------------------------
# summary
# ----------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ratio_line(label: str, ratios: list[float], spread: bool) -> str:
    half = sum(r <= 0.5 for r in ratios)
    extra = f", min {min(ratios):.2f}, max {max(ratios):.2f}" if spread else ""
    return (f"{label}, n={len(ratios)}): median {statistics.median(ratios):.2f}{extra}; "
            f"torchslim <= 0.5 x Torch-Pruning on {half}/{len(ratios)}")  # fmt: skip


def summary(path: Path) -> str:
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in _load(path):
        latest[(row["model"], row["tool"])] = row  # the last line per pair wins
    models = sorted({m for m, _ in latest})
    head = (
        "| model | torchslim ok | ts MACs | ts params | ts s | Torch-Pruning ok | TP MACs "
        "| TP params | TP s | time ts/TP |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    ratios, ratios_both_ok, cpu_ratios = [], [], []
    ok = dict.fromkeys(TOOLS, 0)
    ran = dict.fromkeys(TOOLS, 0)
    total_s = dict.fromkeys(TOOLS, 0.0)
    for m in models:
        cells = [m]
        secs = {}
        for tool in TOOLS:
            r = latest.get((m, tool))
            if r is None:
                cells += ["not run", "", "", ""]
                continue
            ran[tool] += 1
            ok[tool] += bool(r.get("ok"))
            secs[tool] = r.get("prune_seconds")
            if secs[tool] is not None:
                total_s[tool] += secs[tool]
            mark = "yes" if r.get("ok") else f"**no** ({r.get('error_type') or '?'})"
            cells += [
                mark,
                _fmt(r.get("macs_ratio")),
                _fmt(r.get("params_ratio")),
                _fmt(secs[tool], 2),
            ]
        ts_s, tp_s = secs.get("torchslim"), secs.get("torch-pruning")
        ratio = ts_s / tp_s if ts_s is not None and tp_s else None
        if ratio is not None:
            ratios.append(ratio)
            both = all(latest.get((m, t), {}).get("ok") for t in TOOLS)
            if both:
                ratios_both_ok.append(ratio)
        cpu = [latest.get((m, t), {}).get("prune_cpu_seconds") for t in TOOLS]
        if None not in cpu and cpu[1]:
            cpu_ratios.append(cpu[0] / cpu[1])
        cells.append(_fmt(ratio, 2))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"models: {len(models)}")
    for tool in TOOLS:
        lines.append(f"{tool}: ok {ok[tool]}/{ran[tool]}, total prune time {total_s[tool]:.1f} s")
    for label, values, spread in (
        ("time ratio ts/TP (models where both pruning calls returned", ratios, True),
        ("time ratio ts/TP (models where both tools are ok", ratios_both_ok, False),
        ("CPU-time ratio ts/TP (process time of the pruning call", cpu_ratios, False),
    ):
        if values:
            lines.append(_ratio_line(label, values, spread))
    checked = [r for r in latest.values() if "report_matches" in r]
    if checked:
        wrong = [r["model"] for r in checked if not r["report_matches"]]
        lines.append(
            f"torchslim report (MACs, params after) = measured on {len(checked) - len(wrong)}"
            f"/{len(checked)}" + (f"; differs on {', '.join(wrong)}" if wrong else "")
        )
    for tool in TOOLS:
        failed = [r for (_, t), r in sorted(latest.items()) if t == tool and not r.get("ok")]
        lines.append("")
        lines.append(f"{tool} failures ({len(failed)}):")
        lines += [f"- {r['model']}: {r.get('error')}" for r in failed]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# machine-readable results (benchmarks/results, rendered into BENCHMARKS.md)
# ----------------------------------------------------------------------------------------------

COVERAGE = "50% channel pruning of the 80 torchvision classifiers (runs, output shape kept)"
TIME = "Pruning time over Torch-Pruning's (80-model sweep, single first calls)"


def _results(args: argparse.Namespace) -> Results | None:
    """Where a sweep's figures go (None: nowhere)."""
    path = args.results if args.results is not None else str(RESULTS_DIR / "prune_sweep.jsonl")
    if not path:
        return None
    res = Results(
        path,
        table="",
        area="pruning",
        claim="",
        threads=args.threads,
        settings={
            "ratio": RATIO,
            "timeout s": args.timeout,
            "repeat": args.repeat,
            "max RSS GiB": args.max_rss_gb,
            "raw results": str(args.out),
        },
    )
    return res


def _failure(rec: dict[str, Any]) -> str:
    kind = rec.get("error_type") or "?"
    error = rec.get("error") or ""
    if kind == "MemoryLimit":
        limit = re.search(r"limit ([\d.]+) GiB", error)
        return f"killed at {float(limit.group(1)) if limit else '?':g} GiB resident (MemoryLimit)"
    if kind == "ShapeMismatch":
        return "output shape changed (ShapeMismatch)"
    stage = error.split(":")[0] if ":" in error else "?"
    return f"{stage}: {kind}"


def _write(path: Path, res: Results, classifiers: list[str]) -> int:
    """The figures of the sweep in ``path``: the classifier tables, or the tasks table when it
    swept torchvision's other models."""
    swept = {r.get("model") for r in _load(path)}
    if any(timm_models.is_timm(m) for m in swept):
        return write_task_results(path, res, timm=True)
    if swept & set(classifiers):
        tools = {r.get("tool") for r in _load(path)}
        if tools == {"torchslim"}:  # a torchslim-only pass: the save/load check of its models
            return write_round_trips(path, res, full=swept == set(classifiers))
        return write_results(path, res, full=swept == set(classifiers))
    return write_task_results(path, res)


def write_task_results(path: Path, res: Results, timm: bool = False) -> int:
    """Models pruned by each tool (per torchvision family, or over timm's families), the
    save/load round trips, the time ratio (timm) and the failures by cause."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in _load(path):
        latest[(row["model"], row["tool"])] = row
    tp_version = next((r.get("torch_pruning") for r in latest.values()
                       if r.get("torch_pruning")), "?")  # fmt: skip
    tp = f"Torch-Pruning {tp_version}"
    table = "prune_sweep_timm" if timm else "prune_sweep_tasks"
    if timm:
        claim = "50% of the channels of the smallest model of every timm family"
        headline = {"claim": "50% channel pruning of every timm architecture family (runs, "
                    "output shape kept)", "order": 6}  # fmt: skip
        target = {"text": "≥ 97%; ≥ Torch-Pruning", "op": ">=", "share": 0.97}
    else:
        claim = "50% of the channels of torchvision's detection, segmentation, video, flow models"
        headline = {"claim": "50% channel pruning of torchvision's detection, segmentation, "
                    "video and flow models (runs, output structure kept)", "order": 5}  # fmt: skip
        target = {"text": "all; ≥ Torch-Pruning", "op": "all"}
    n = 0
    fams = [] if timm else sorted({family(m) for m, _ in latest})
    for fam in [*fams, "all"]:
        rows = {k: r for k, r in latest.items() if fam == "all" or family(k[0]) == fam}
        count = {t: sum(bool(r.get("ok")) for (_, tt), r in rows.items() if tt == t) for t in TOOLS}
        ran = {t: sum(tt == t for _, tt in rows) for t in TOOLS}
        peer = None
        if ran["torch-pruning"]:
            peer = {"name": tp, "value": count["torch-pruning"], "unit": "count", "digits": 0,
                    "of": ran["torch-pruning"]}  # fmt: skip
        aim = dict(target)
        if "share" in aim:  # a share of the models swept
            aim["value"] = math.ceil(aim.pop("share") * ran["torchslim"])
        res.add(fam, "torchslim", count["torchslim"], "count", 0, table=table, claim=claim,
                row_header=["family"], of=ran["torchslim"], peer=peer, target=aim,
                headline=headline if fam == "all" else None)  # fmt: skip
        trips = [r["roundtrip_ok"] for (_, t), r in rows.items() if "roundtrip_ok" in r]
        if trips:
            res.add(fam, "save/load identical", sum(trips), "count", 0, table=table,
                    claim=claim, row_header=["family"], of=len(trips))  # fmt: skip
        n += 1 + bool(trips)
    if timm:
        ratios = []
        for m in {m for m, _ in latest}:
            a = latest.get((m, "torchslim"), {}).get("prune_seconds")
            b = latest.get((m, "torch-pruning"), {}).get("prune_seconds")
            if a is not None and b:
                ratios.append(a / b)
        if ratios:
            res.add("all", "time ts/TP, median", round(statistics.median(ratios), 4), "ratio",
                    2, table=table, claim=claim, row_header=["family"],
                    target={"text": "≤ 0.5", "op": "<=", "value": 0.5},
                    note=f"{len(ratios)} models where both pruning calls returned")  # fmt: skip
            n += 1
    failures: dict[str, list[str]] = {}
    for (m, t), r in sorted(latest.items()):
        if not r.get("ok"):
            failures.setdefault(f"{t}: {_failure(r)}", []).append(m)
        elif r.get("roundtrip_ok") is False:
            failures.setdefault(f"{t}: save/load outputs differ", []).append(m)
    for why, names in failures.items():
        if why.startswith("torch-pruning"):  # the peer's failures by cause, as counts
            res.add(why, "models", len(names), "count", 0, table=f"{table}_failures",
                    claim=claim, row_header=["tool: failure"], model=", ".join(names))  # fmt: skip
        else:
            res.add(why, "models", names, "text", None, table=f"{table}_failures",
                    claim=claim, row_header=["tool: failure"], join=", ",
                    model=", ".join(names))  # fmt: skip
        n += 1
    return n


def write_round_trips(path: Path, res: Results, full: bool) -> int:
    """One figure: how many torchslim-pruned classifiers save and load with identical
    outputs (a torchslim-only pass, beside the two-tool sweep's summary)."""
    latest = {r["model"]: r for r in _load(path) if r.get("tool") == "torchslim"}
    trips = [bool(r.get("roundtrip_ok")) for r in latest.values() if r.get("ok")]
    prefix = "prune_sweep" if full else "prune_sweep_subset"
    res.add("pruned models that save and load with identical outputs (torchslim-only pass)",
            "torchslim", sum(trips), "count", 0, table=f"{prefix}_summary",
            claim="50% of the channels of every torchvision classifier, torchslim beside "
            "Torch-Pruning", row_header=["figure"], of=len(trips),
            target={"text": "all", "op": "all"})  # fmt: skip
    return 1


def write_results(path: Path, res: Results, full: bool) -> int:
    """Append the figures of the sweep in ``path`` (last line per pair) to ``res``; ``full``:
    every torchvision classifier was swept (only then do they stand for the headline claims)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in _load(path):
        latest[(row["model"], row["tool"])] = row
    models = sorted({m for m, _ in latest})
    prefix = "prune_sweep" if full else "prune_sweep_subset"
    claim = "50% of the channels of every torchvision classifier, torchslim beside Torch-Pruning"
    if not full:
        claim = "50% of the channels of some torchvision classifiers, beside Torch-Pruning"
    tp_version = next(
        (
            r.get("torch_pruning")
            for (_, t), r in latest.items()
            if t == "torch-pruning" and r.get("torch_pruning")
        ),
        "?",
    )
    tp = f"Torch-Pruning {tp_version}"
    n = 0

    def add(
        table: str,
        row: Any,
        metric: str,
        value: Any,
        unit: str,
        digits: int | None,
        header: list[str],
        **extra: Any,
    ) -> None:
        nonlocal n
        res.add(
            row,
            metric,
            value,
            unit,
            digits,
            table=f"{prefix}_{table}",
            claim=claim,
            row_header=header,
            **extra,
        )
        n += 1

    ok = {t: sum(bool(r.get("ok")) for (_, tt), r in latest.items() if tt == t) for t in TOOLS}
    ran = {t: sum(tt == t for _, tt in latest) for t in TOOLS}
    secs = {
        t: sum(r.get("prune_seconds") or 0.0 for (_, tt), r in latest.items() if tt == t)
        for t in TOOLS
    }

    def head(claim: str, label: str = "") -> dict[str, Any] | None:
        return (
            {"claim": claim, "order": 3 if claim == COVERAGE else 4, "label": label}
            if full
            else None
        )

    add(
        "summary",
        "models pruned (forward runs, output shape unchanged)",
        "torchslim",
        ok["torchslim"],
        "count",
        0,
        ["figure"],
        of=ran["torchslim"],
        peer={
            "name": tp,
            "value": ok["torch-pruning"],
            "unit": "count",
            "digits": 0,
            "of": ran["torch-pruning"],
        },
        target={"text": f"all {ran['torchslim']}", "op": "all"},
        headline=head(COVERAGE),
    )
    add(
        "summary",
        "total pruning time, s",
        "torchslim",
        round(secs["torchslim"], 2),
        "s",
        1,
        ["figure"],
        peer={"name": tp, "value": round(secs["torch-pruning"], 2), "unit": "s", "digits": 1},
        headline=head(TIME, "total pruning time"),
    )
    checked = [r for r in latest.values() if "report_matches" in r]
    if checked:
        add(
            "summary",
            "report (MACs, params after) equal to the measurement",
            "torchslim",
            sum(bool(r["report_matches"]) for r in checked),
            "count",
            0,
            ["figure"],
            of=len(checked),
        )
    wall, both_ok, cpu = [], [], []
    for m in models:
        ts_r, tp_r = latest.get((m, "torchslim"), {}), latest.get((m, "torch-pruning"), {})
        a, b = ts_r.get("prune_seconds"), tp_r.get("prune_seconds")
        if a is not None and b:
            wall.append(a / b)
            if ts_r.get("ok") and tp_r.get("ok"):
                both_ok.append(a / b)
        ca, cb = ts_r.get("prune_cpu_seconds"), tp_r.get("prune_cpu_seconds")
        if ca is not None and cb:
            cpu.append(ca / cb)
    header = ["ratio ts/TP over the models where", "n"]
    for label, values, spread, targeted in (
        ("both pruning calls returned (wall time)", wall, True, True),
        ("both tools are ok (wall time)", both_ok, False, True),
        ("both pruning calls returned (CPU time)", cpu, False, False),
    ):
        if not values:
            continue
        row = [label, str(len(values))]
        first = spread and full
        add(
            "time",
            row,
            "median",
            round(statistics.median(values), 4),
            "ratio",
            2,
            header,
            headline=head(TIME, "median ratio") if first else None,
        )
        if spread:
            add("time", row, "min", round(min(values), 4), "ratio", 2, header)
            add("time", row, "max", round(max(values), 4), "ratio", 2, header)
        add(
            "time",
            row,
            "models ≤ 0.5",
            sum(r <= 0.5 for r in values),
            "count",
            0,
            header,
            of=len(values),
            target={"text": "≤ 0.5 on every model", "op": "all"} if targeted else None,
            headline=head(TIME, "models at ≤ 0.5") if first else None,
        )
    failures: dict[str, list[str]] = {}
    for (m, t), r in sorted(latest.items()):
        if t == "torch-pruning" and not r.get("ok"):
            failures.setdefault(_failure(r), []).append(m)
    for why, names in failures.items():
        add("failures", why, "models", names, "text", None, [tp], join=", ", model=", ".join(names))
    for m in models:
        ts_r, tp_r = latest.get((m, "torchslim"), {}), latest.get((m, "torch-pruning"), {})
        for metric, key, unit, digits, label in (
            ("MACs kept", "macs_ratio", "ratio", 3, "TP MACs kept"),
            ("params kept", "params_ratio", "ratio", 3, "TP params kept"),
            ("prune s", "prune_seconds", "s", 2, "TP prune s"),
        ):
            if ts_r.get(key) is None:
                continue
            peer = None
            if tp_r.get(key) is not None:
                peer = {
                    "name": tp,
                    "label": label,
                    "value": round(tp_r[key], 4),
                    "unit": unit,
                    "digits": digits,
                }
            add(
                "models",
                m,
                metric,
                round(ts_r[key], 4),
                unit,
                digits,
                ["model"],
                model=m,
                peer=peer,
            )
        a, b = ts_r.get("prune_seconds"), tp_r.get("prune_seconds")
        if a is not None and b:
            add("models", m, "time ts/TP", round(a / b, 4), "ratio", 2, ["model"], model=m)
    return n


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        default="all",
        help="comma list of torchvision or timm:ARCH names; all (the classifiers); tasks "
        "(torchvision's other models); timm (the smallest model of every timm family)",
    )
    parser.add_argument(
        "--timm-list",
        default=str(timm_models.DEFAULT_LIST),
        help="the timm family selection (made by benchmarks/_timm_models.py when missing)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="input side (default 224; 299 for inception_v3 as torchvision does)",
    )
    parser.add_argument(
        "--tools", default=",".join(TOOLS), help="comma list of " + ", ".join(TOOLS)
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help="JSON lines file (appended)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per model/tool pair")
    parser.add_argument(
        "--max-rss-gb",
        type=float,
        default=16,
        help="kill a worker whose resident memory passes this (protects the shared machine)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="time the pruning call on this many fresh copies, keep the minimum",
    )
    parser.add_argument("--resume", action="store_true", help="skip pairs already in --out")
    parser.add_argument("--summary", action="store_true", help="print the Markdown table of --out")
    parser.add_argument(
        "--results",
        default=None,
        help="append the sweep's figures here for benchmarks/render.py (default after a sweep: "
        "benchmarks/results/prune_sweep.jsonl; with --summary only when given; '' = never)",
    )
    parser.add_argument("--worker", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--tool", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.size is not None and args.size < 75:
        parser.error("--size must be >= 75 (inception_v3's minimum)")
    if args.summary:
        print(summary(Path(args.out)))
        if args.results:
            import torchvision

            every = torchvision.models.list_models(module=torchvision.models)
            res = _results(args)
            if res is not None:
                n = _write(Path(args.out), res, every)
                print(f"{n} figures appended to {res.path}")
    elif args.worker:
        rec = run_pair(args.worker, args.tool, args.size, args.threads, args.repeat)
        rec["python"] = platform.python_version()
        Path(args.result).write_text(json.dumps(rec))
        print(json.dumps({k: v for k, v in rec.items() if k != "traceback_tail"}))
    else:
        sweep(args)


if __name__ == "__main__":
    main()
