"""benchmarks/render.py: BENCHMARKS.md's tables are made from benchmarks/results/*.jsonl."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _module(name: str) -> ModuleType:
    sys.path.insert(0, str(BENCH))  # the scripts import their helpers (_results) this way
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _module("render")
results = _module("_results")

PAGE = """# Benchmarks

Prose stays as written.

<!-- results:headline -->
<!-- /results:headline -->

<!-- results:tiny -->
old table
<!-- /results:tiny -->

More prose.
"""
HEAD = {"claim": "int8 is smaller", "order": 1, "label": "smaller"}
TARGET = {"text": "≥ 3.5×", "op": ">=", "value": 3.5}


def _record(row: str, metric: str, value: float, unit: str, digits: int, **extra: object) -> dict:
    return {
        "table": "tiny",
        "area": "pipeline",
        "claim": "a claim",
        "row": [row],
        "row_header": ["stage"],
        "metric": metric,
        "value": value,
        "unit": unit,
        "digits": digits,
        "command": "python benchmarks/demo_bench.py",
        "machine": {"label": "test box", "cpu": "a CPU", "flags": "avx2", "threads": 2},
        "versions": {"torch": "2.x"},
        "date": "2026-12-01",
        "source": "measured",
        **extra,
    }


@pytest.fixture()
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "results"
    folder.mkdir()
    lines = [
        _record("baseline", "top-1", 85.13, "%", 2),
        _record("baseline", "smaller", 1.0, "x", 2),
        _record("int8", "top-1", 85.84, "%", 2),
        _record(
            "int8",
            "smaller",
            3.674,
            "x",
            2,
            headline=HEAD,
            target=TARGET,
            peer={"name": "PaddleSlim", "value": 3.5, "unit": "x", "digits": 1},
        ),
    ]
    (folder / "demo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    page = tmp_path / "BENCHMARKS.md"
    page.write_text(PAGE)
    return folder, page


def test_renders_a_table_from_a_tiny_results_folder(tiny: tuple[Path, Path]) -> None:
    folder, page = tiny
    assert render.main(["--results-dir", str(folder), "--page", str(page)]) == 0
    text = page.read_text()
    assert "old table" not in text
    assert "| stage | top-1 | smaller | PaddleSlim |" in text
    assert "| int8 | 85.84% | 3.67x ✓ | 3.5x |" in text  # value, target met, peer beside it
    assert (  # one row per claim: ours, the peer's, target, verdict, command · machine · date
        "| int8 is smaller | smaller 3.67x | PaddleSlim: smaller 3.5x | ≥ 3.5× | met | "
        "`python benchmarks/demo_bench.py` · test box · 2026-12-01 |"
    ) in text
    assert "Run: as in the headline." in text  # the table's one run is the headline's
    assert "Prose stays as written." in text and text.endswith("More prose.\n")
    assert render.main(["--check", "--results-dir", str(folder), "--page", str(page)]) == 0


def test_check_fails_when_a_figure_and_its_table_disagree(tiny: tuple[Path, Path]) -> None:
    folder, page = tiny
    render.main(["--results-dir", str(folder), "--page", str(page)])
    rendered = page.read_text()
    with (folder / "demo.jsonl").open("a") as f:  # a new run of the script: the last line wins
        f.write(json.dumps(_record("int8", "top-1", 85.5, "%", 2)) + "\n")
    assert render.main(["--check", "--results-dir", str(folder), "--page", str(page)]) == 1
    assert page.read_text() == rendered  # --check writes nothing
    render.main(["--results-dir", str(folder), "--page", str(page)])
    assert "| int8 | 85.50% |" in page.read_text()


def test_a_missed_target_stays_visible(tiny: tuple[Path, Path]) -> None:
    folder, page = tiny
    with (folder / "demo.jsonl").open("a") as f:
        f.write(json.dumps(_record("int8", "smaller", 3.2, "x", 2, headline=HEAD, target=TARGET)))
    render.main(["--results-dir", str(folder), "--page", str(page)])
    text = page.read_text()
    assert "3.20x ✗" in text
    assert "| ≥ 3.5× | **not met** |" in text


def test_a_block_without_results_is_an_error(tiny: tuple[Path, Path]) -> None:
    folder, page = tiny
    page.write_text(PAGE + "\n<!-- results:nowhere -->\n<!-- /results:nowhere -->\n")
    assert render.main(["--results-dir", str(folder), "--page", str(page)]) == 2


def test_the_results_writer_records_what_a_figure_needs(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    res = results.Results(path, table="t", area="a", claim="c", row_header=["row"], threads=2)
    res.add("r", "m", 1.5, "ms", 1, peer={"name": "peer", "value": 2.0})
    (rec,) = [json.loads(line) for line in path.read_text().splitlines()]
    for field in ("table", "claim", "row", "metric", "value", "unit", "model", "settings",
                  "peer", "command", "machine", "versions", "date", "source"):  # fmt: skip
        assert field in rec, field
    assert {"cpu", "flags", "threads"} <= rec["machine"].keys()
    assert rec["machine"]["threads"] == 2 and "torch" in rec["versions"]
    assert rec["source"] == "measured" and rec["command"].startswith("python ")


def test_every_benchmark_script_takes_results() -> None:
    scripts = [
        p for p in BENCH.glob("*.py") if not p.name.startswith("_") and p.name != "render.py"
    ]
    scripts += list(BENCH.glob("*.sh"))
    missing = [p.name for p in scripts if "--results" not in p.read_text()]
    assert not missing, missing


def test_committed_results_say_where_each_figure_comes_from() -> None:
    records = render.load(BENCH / "results")
    assert records
    for rec in records:
        assert {"command", "machine", "date", "source", "versions"} <= rec.keys(), rec
        assert rec["source"] == "measured" or rec["source"].startswith(
            "transcribed from BENCHMARKS.md at "
        )


def test_committed_page_is_rendered_from_the_committed_results() -> None:
    done = subprocess.run([sys.executable, str(BENCH / "render.py"), "--check"], cwd=ROOT,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # a results page, not a log (27,000 before the detection, segmentation, timm, YOLO results;
    # 33,000 before compression search and latency; 37,000 before the search tables; 40,000
    # before the CIFAR-10 search table and the transformer results; 44,000 before the ViT;
    # 45,000 before MobileNetV2's mixed precision and the Fashion-MNIST 50% search table;
    # 48,000 before the default channel multiple's AVX2 run)
    assert len((ROOT / "BENCHMARKS.md").read_bytes()) <= 49_000


def test_re_runs_of_one_command_are_one_run_dated_from_the_first() -> None:
    a = _record("a", "top-1", 90.0, "%", 2, date="2026-12-06 10:00")
    b = _record("b", "top-1", 91.0, "%", 2, date="2026-12-06 11:00")
    c = _record("c", "top-1", 92.0, "%", 2, command="python other.py", date="2026-12-06 12:00")
    body, runs = render.render_table([a, b, c])
    assert "| a | 90.00% | [1] |" in body and "| b | 91.00% | [1] |" in body
    assert "| c | 92.00% | [2] |" in body
    assert runs.count("\n- [") == 2 and "2026-12-06 10:00 (+1 more)" in runs


def test_the_machine_every_run_shares_is_said_once() -> None:
    a = _record("a", "top-1", 90.0, "%", 2, command="python one.py")
    b = _record("b", "top-1", 91.0, "%", 2, command="python two.py")
    _, runs = render.render_table([a, b])
    head, *lines = runs.splitlines()
    assert head.startswith("Runs (test box") and len(lines) == 2
    assert not any("test box" in line for line in lines)
    other = {"label": "other box", "cpu": "a CPU", "flags": "avx2", "threads": 2}
    c = _record("c", "top-1", 92.0, "%", 2, command="python three.py", machine=other)
    head, *lines = render.render_table([a, c])[1].splitlines()
    assert "box" not in head and "test box" in lines[0] and "other box" in lines[1]
    head, *lines = render.render_table([a, b, c])[1].splitlines()  # two of three on one box
    assert "(test box, 2 threads unless given" in head and "other box" in lines[2]
    assert not any("test box" in line for line in lines)
