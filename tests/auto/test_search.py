"""ts.search: budgets, strategies, storage, resume after SIGKILL, two workers on one study."""

from __future__ import annotations

import itertools
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

optuna = pytest.importorskip("optuna")

import torchslim as ts  # noqa: E402
from torchslim.auto import BitSpace, PruneSpace, SearchConfig  # noqa: E402
from torchslim.errors import ConfigError, TorchslimError  # noqa: E402
from torchslim.graph.trace import trace  # noqa: E402
from torchslim.latency import op_shapes  # noqa: E402

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from tiny_search import CONFIG, model_and_data  # noqa: E402

SCRIPT = HERE / "tiny_search.py"


def _complete_rows(db: Path) -> int:
    """Finished trials in a worker's SQLite file, read without Optuna (which would write its
    schema version and race the worker creating the file)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:  # not created yet, or mid-write
        return 0


def _trials(out: Path, state: str = "COMPLETE") -> list:
    storage = f"sqlite:///{out / 'search.db'}"
    study = optuna.load_study(study_name="torchslim-search", storage=storage)
    return [t for t in study.trials if t.state.name == state]


@pytest.mark.parametrize("strategy", ["sa", "tpe", "random", "nsga2"])
def test_every_candidate_evaluated_meets_the_budget(strategy: str) -> None:
    net, x, data = model_and_data()
    before = {n: p.clone() for n, p in net.state_dict().items()}
    cfg = {**CONFIG, "trials": 5, "strategy": strategy}
    res = ts.search(net, x, cfg, data=data, progress=False)
    done = [t for t in res.study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 5
    assert all(t.user_attrs["macs_ratio"] <= 0.5 + 1e-9 for t in done)
    pruned = [t for t in res.study.trials if t.state.name == "PRUNED"]
    # rejected before a forward: over budget, or a candidate already scored
    assert all("duplicate_of" in t.user_attrs or t.user_attrs["macs_ratio"] > 0.5 for t in pruned)
    assert len({str(sorted(t.params.items())) for t in done}) == 5
    assert res.score == max(t.value for t in done) and res.macs_ratio <= 0.5
    measured = ts.analyze(res.model, x).macs / ts.analyze(net, x).macs
    assert measured == pytest.approx(res.macs_ratio, rel=1e-6)  # the prediction is the model
    assert all(torch.equal(before[n], p) for n, p in net.state_dict().items())  # untouched
    assert res.front and res.front[0].value == res.score


@pytest.mark.parametrize("strategy", ["tpe", "nsga2"])
def test_sampled_candidates_are_filled_to_the_edge_of_the_budget(strategy: str) -> None:
    net, x, data = model_and_data()
    cfg = {**CONFIG, "round_to": 1, "trials": 8, "strategy": strategy}

    space = PruneSpace(net, x, round_to=1)
    choices = space.variables(SearchConfig(**cfg))

    def proposed(fill: bool) -> list:
        res = ts.search(net, x, {**cfg, "fill": fill}, data=data, progress=False)
        done = [t for t in res.study.trials if t.state.name == "COMPLETE"]
        assert len(done) == 8 and all(t.user_attrs["macs_ratio"] <= 0.5 + 1e-9 for t in done)
        return done[1:]  # after the enqueued start

    for t in proposed(True):  # every proposal spends the budget: no ratio can step down
        assert t.user_attrs["macs_ratio"] > 0.4
        for n, r in t.params.items():
            i = choices[n].index(r)
            assert i == 0 or space.macs_ratio({**t.params, n: choices[n][i - 1]}) > 0.5
    # drawn from the whole space, some are far under it
    assert min(t.user_attrs["macs_ratio"] for t in proposed(False)) < 0.4
    space = BitSpace(net, x, data, choices=(4, 8), batch_size=32, calib_batches=1)
    budget = (
        space.bytes_ratio(dict.fromkeys(space.names, 4))
        + space.bytes_ratio(dict.fromkeys(space.names, 8))
    ) / 2
    bits_cfg = {**CONFIG, "macs": None, "space": "bits", "bytes": budget, "trials": 4,
                "calib_batches": 1, "strategy": strategy}  # fmt: skip
    res = ts.search(net, x, bits_cfg, data=data, progress=False)
    done = [t for t in res.study.trials if t.state.name == "COMPLETE"][1:]
    assert done
    for t in done:  # in budget, and no 4-bit layer could take 8 bits
        assert space.bytes_ratio(t.params) <= budget + 1e-9
        for n, b in t.params.items():
            assert b == 8 or space.bytes_ratio({**t.params, n: 8}) > budget


def test_annealing_with_fill_walks_on_the_edge_of_the_budget() -> None:
    net, x, data = model_and_data()
    cfg = {**CONFIG, "round_to": 1, "trials": 8, "fill": True}
    space = PruneSpace(net, x, round_to=1)
    choices = space.variables(SearchConfig(**cfg))
    res = ts.search(net, x, cfg, data=data, progress=False)
    done = [t for t in res.study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 8
    assert len({tuple(sorted(t.params.items())) for t in done}) == 8  # still no repeats
    for t in done[1:]:  # every neighbour spends the budget: no ratio can step down
        assert t.user_attrs["macs_ratio"] <= 0.5 + 1e-9
        for n, r in t.params.items():
            i = choices[n].index(r)
            assert i == 0 or space.macs_ratio({**t.params, n: choices[n][i - 1]}) > 0.5


def test_annealing_fills_by_default_under_a_latency_budget_only() -> None:
    from torchslim.auto.samplers import AnnealingSampler, make_sampler

    def sampler(**cfg: object) -> AnnealingSampler:
        made = make_sampler(SearchConfig(**cfg), lambda p: True, {"a": [0.0, 0.5]})
        assert isinstance(made, AnnealingSampler)
        return made

    assert sampler(latency=0.7).order is not None
    assert sampler(macs=0.5).order is None
    assert sampler(macs=0.5, fill=True).order is not None
    assert sampler(latency=0.7, fill=False).order is None


def test_filling_annealing_walks_back_into_a_tightened_budget() -> None:
    from torchslim.auto.config import AnnealingConfig
    from torchslim.auto.samplers import AnnealingSampler

    limit = {"x": 10}
    grid = list(range(11))
    meets = lambda p: p["x"] + p["y"] <= limit["x"]  # noqa: E731
    sampler = AnnealingSampler(AnnealingConfig(), seed=0, constraint=meets,
                               order={"x": grid[::-1], "y": grid[::-1]})  # fmt: skip
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({"x": 5, "y": 5})

    def objective(t: optuna.Trial) -> float:
        return t.suggest_categorical("x", grid) + 0.5 * t.suggest_categorical("y", grid)

    study.optimize(objective, n_trials=4)
    assert all(t.params["x"] + t.params["y"] == 10 for t in study.trials)  # on the edge
    limit["x"] = 4  # no trial fits the corrected budget: the walk shrinks its best into it
    assert sampler.current(study) is None
    study.optimize(objective, n_trials=3)
    assert all(t.params["x"] + t.params["y"] == 4 for t in study.trials[4:])


def test_the_first_candidate_is_the_uniform_ratio_that_meets_the_budget() -> None:
    net, x, data = model_and_data()
    space = PruneSpace(net, x)
    grid = SearchConfig().grid
    r = space.uniform(grid, 0.5, None)
    assert space.feasible(dict.fromkeys(space.names, r), 0.5, None)
    assert not space.feasible(dict.fromkeys(space.names, grid[grid.index(r) - 1]), 0.5, None)
    res = ts.search(net, x, {**CONFIG, "trials": 2}, data=data, progress=False)
    assert res.study.trials[0].params == dict.fromkeys(space.names, r)


def test_annealing_never_repeats_a_candidate() -> None:
    net, x, data = model_and_data()
    res = ts.search(net, x, {**CONFIG, "trials": 12}, data=data, progress=False)
    keys = [tuple(sorted(t.params.items())) for t in res.study.trials if t.params]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("strategy", ["sa", "random"])
def test_a_search_that_has_scored_every_reachable_candidate_stops(strategy: str, caplog) -> None:
    # Two variables of 0-0.8 in 0.05 steps, filled to the edge of 50% MACs: far fewer than
    # 200 distinct candidates. The samplers then only repeat scored ones; each repeat was a
    # pruned trial, thousands of them, until the trial budget's cap of proposals.
    from torchslim.auto.study import EXHAUSTED_AFTER

    net, x, data = model_and_data()
    with caplog.at_level("WARNING", logger="torchslim.search"):
        res = ts.search(net, x, {**CONFIG, "trials": 200, "strategy": strategy}, data=data,
                        progress=False)  # fmt: skip
    done = [t for t in res.study.trials if t.state.name == "COMPLETE"]
    assert 1 < len(done) < 200
    assert len(res.study.trials) < len(done) + 2 * EXHAUSTED_AFTER + 200
    assert f"stopped at {len(done)} of 200 trials" in caplog.text


def test_annealing_restarts_from_a_feasible_trial_when_its_budget_tightens() -> None:
    from torchslim.auto.config import AnnealingConfig
    from torchslim.auto.samplers import AnnealingSampler

    limit = {"x": 10}
    sampler = AnnealingSampler(AnnealingConfig(), seed=0,
                               constraint=lambda p: p["x"] <= limit["x"])  # fmt: skip
    study = optuna.create_study(direction="maximize", sampler=sampler)
    grid = list(range(11))
    for x in (2, 8):
        study.enqueue_trial({"x": x})
    study.optimize(lambda t: 100.0 * t.suggest_categorical("x", grid), n_trials=5)
    assert sampler.current(study).params["x"] >= 8  # the walk keeps the better state
    limit["x"] = 3  # the budget tightens (a corrected latency prediction)
    assert sampler.current(study).params["x"] == 2  # the best trial that still fits
    limit["x"] = 1
    assert sampler.current(study) is None  # none fits: the sampler falls back


def test_a_stopped_search_resumes_and_a_finished_one_is_not_redone(tmp_path: Path) -> None:
    net, x, data = model_and_data()
    ts.search(net, x, {**CONFIG, "trials": 3}, data=data, out_dir=tmp_path, progress=False)
    first = [(t.params, t.value) for t in _trials(tmp_path)]
    with pytest.raises(ConfigError, match="resume=True"):
        ts.search(net, x, {**CONFIG, "trials": 5}, data=data, out_dir=tmp_path, progress=False)
    ts.search(net, x, {**CONFIG, "trials": 5}, data=data, out_dir=tmp_path, resume=True,
              progress=False)  # fmt: skip
    done = _trials(tmp_path)
    assert len(done) == 5 and [(t.params, t.value) for t in done[:3]] == first


def test_sigkill_then_resume_keeps_every_finished_trial(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(tmp_path), "8", "slow"], env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(0.5)
            if _complete_rows(tmp_path / "search.db") >= 2:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    kept = [(t.number, t.params, t.value) for t in _trials(tmp_path)]
    assert 2 <= len(kept) < 8
    time.sleep(2.5)  # the killed trial's heartbeat goes stale: it is marked failed on resume
    subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "8"], env=env, check=True)
    done = _trials(tmp_path)
    assert len(done) == 8
    assert [(t.number, t.params, t.value) for t in done[: len(kept)]] == kept


def test_two_workers_on_one_storage_finish_n_distinct_trials(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the study is created first, so that both workers join it
    net, x, data = model_and_data()
    ts.search(net, x, {**CONFIG, "trials": 1}, data=data, out_dir=tmp_path, progress=False)
    workers = [subprocess.Popen([sys.executable, str(SCRIPT), str(tmp_path), "10"], env=env)
               for _ in range(2)]  # fmt: skip
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    done = _trials(tmp_path)
    keys = {tuple(sorted(t.params.items())) for t in done}
    assert len(done) == 10 and len(keys) == 10


def test_a_latency_budget_rejects_slow_candidates_before_scoring(monkeypatch) -> None:
    from torchslim.latency import LatencyModel, LatencyTable

    # Deterministic stand-ins for timing: an op costs its MACs; a model whole, its ops + 0.01.
    monkeypatch.setattr(LatencyTable, "ms", lambda self, op: 1e-6 * math.prod(op.shape)
                        * math.prod(op.weight[:1] + op.weight[2:]))  # fmt: skip
    calls = []

    def measure_many(self, models, rounds=5):
        calls.append(len(models))
        return [0.01 + self.table.total_ms(op_shapes(trace(m, self.inputs))) for m in models]

    monkeypatch.setattr(LatencyModel, "measure_many", measure_many)
    net, x, data = model_and_data()
    cfg = {**CONFIG, "macs": None, "latency": 0.6, "trials": 4}
    res = ts.search(net, x, cfg, data=data, progress=False)
    done = [t for t in res.study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 4 and all(t.user_attrs["latency_ratio"] <= 0.6 + 1e-9 for t in done)
    pruned = [t for t in res.study.trials if t.state.name == "PRUNED"]
    assert all(t.user_attrs["latency_ratio"] > 0.6 for t in pruned)
    assert res.latency_ratio is not None and res.latency_ratio <= 0.6
    assert "latency" in str(res)
    assert calls == [6, 2]  # calibrated once (dense, two uniform cuts, three random
    # candidates), then the chosen candidate measured with the dense model: as predicted
    assert res.measured_latency_ratio == pytest.approx(res.latency_ratio, rel=1e-6)


# 1.04: a prediction 4% fast, which the budget's 5% would hold but not the next measurement
@pytest.mark.parametrize("factor", [1.2, 1.04, 0.85])
def test_a_latency_budget_is_corrected_by_measuring_the_chosen_candidate(
    monkeypatch, factor: float
) -> None:
    from torchslim.latency import LatencyModel, LatencyTable

    monkeypatch.setattr(LatencyTable, "ms", lambda self, op: 1e-6 * math.prod(op.shape)
                        * math.prod(op.weight[:1] + op.weight[2:]))  # fmt: skip

    def measure_many(self, models, rounds=5):  # a pruned model measures slower / faster
        true = [0.01 + self.table.total_ms(op_shapes(trace(m, self.inputs))) for m in models]
        return true if len(models) != 2 else [true[0], factor * true[1]]

    monkeypatch.setattr(LatencyModel, "measure_many", measure_many)
    net, x, data = model_and_data()
    res = ts.search(net, x, {**CONFIG, "macs": None, "latency": 0.7, "trials": 8}, data=data,
                    progress=False)  # fmt: skip
    assert res.measured_latency_ratio is not None and res.measured_latency_ratio <= 0.7 + 1e-9
    assert res.latency_ratio == pytest.approx(res.measured_latency_ratio, rel=0.05)
    done = [t for t in res.study.trials if t.state.name == "COMPLETE"]
    assert res.score <= max(t.value for t in done)  # the best that meets the corrected budget
    # and it spends that budget: with the prediction far off, the candidates filled to the
    # uncorrected edge are all over it (slower) or well under it (faster), so the search went
    # on under the corrected one
    assert res.measured_latency_ratio >= 0.95 * 0.7
    assert len(done) > 8 or abs(factor - 1) < 0.05
    with pytest.raises(ConfigError, match="verify_latency"):
        SearchConfig(latency=0.5, verify_latency=-1)


def test_a_fast_measurement_never_makes_the_unpruned_model_fit(monkeypatch) -> None:
    # Found on a noisy shared CPU: the chosen candidate measured far faster than predicted,
    # every predicted ratio was scaled down by that, the unpruned model (ratio 1) then met the
    # budget, and the search returned it. A correction now keeps the larger of the scaled
    # ratio and the scaled saving (LatencyCorrection): the unpruned model stays at 1.
    from torchslim.latency import LatencyModel, LatencyTable

    monkeypatch.setattr(LatencyTable, "ms", lambda self, op: 1e-6 * math.prod(op.shape)
                        * math.prod(op.weight[:1] + op.weight[2:]))  # fmt: skip

    def measure_many(self, models, rounds=5):  # a burst of speed while the pruned one runs
        true = [0.01 + self.table.total_ms(op_shapes(trace(m, self.inputs))) for m in models]
        return true if len(models) != 2 else [true[0], 0.6 * true[1]]

    monkeypatch.setattr(LatencyModel, "measure_many", measure_many)
    net, x, data = model_and_data()
    res = ts.search(net, x, {**CONFIG, "macs": None, "latency": 0.7, "trials": 8}, data=data,
                    progress=False)  # fmt: skip
    assert res.macs_ratio is not None and res.macs_ratio < 0.9
    assert res.latency_ratio is not None and res.latency_ratio <= 0.7 + 1e-9


def test_bad_configs_say_what_to_change() -> None:
    assert SearchConfig(macs=None).macs == 0.5  # no budget given: the default one
    assert SearchConfig(latency=0.5).macs is None
    with pytest.raises(ConfigError, match="latency_batch_size"):
        SearchConfig(latency=0.5, latency_batch_size=0)
    with pytest.raises(ConfigError, match=r"'2\.0ms'"):
        SearchConfig(latency=2.0)  # an absolute latency needs its unit
    with pytest.raises(ConfigError, match="one of k, M, G"):
        SearchConfig(macs="40Q")
    with pytest.raises(ConfigError, match="> 0"):
        SearchConfig(params=0)
    with pytest.raises(ConfigError, match="32 for float"):
        SearchConfig(space="bits", bytes=0.2, weight_bits=(4, 16))
    with pytest.raises(ConfigError, match="joint needs a budget"):
        SearchConfig(space="joint")
    with pytest.raises(ConfigError, match="strategy"):
        SearchConfig(strategy="annealing")
    with pytest.raises(ConfigError, match="sqnr scores a bits search"):
        SearchConfig(score="sqnr")
    with pytest.raises(ConfigError, match="tune_steps: fine-tunes pruning candidates"):
        SearchConfig(space="bits", bytes=0.2, tune_steps=5)


def test_a_recipe_search_stage_prunes_to_its_budget_and_fine_tunes(tmp_path: Path) -> None:
    from torchslim.pipeline import compress, parse_recipe

    quick = {"epochs": 1, "batch_size": 32, "progress": False}
    recipe = {
        "model": {"name": "resnet8"},
        "data": {"name": "fashion-mnist", "subset": 100, "test_subset": 50},
        "report": {"batch_sizes": [1], "repeats": 2, "html": False},
        "stages": [
            {"name": "baseline", "type": "train", "train": quick},
            {"name": "searched", "type": "search", "macs": 0.5, "trials": 3,
             "eval_images": 32, "bn_images": 32, "finalists": 2, "final_steps": 2,
             "finetune": quick},
            {"name": "mixed", "type": "search", "input": "baseline", "space": "bits",
             "bytes": 0.2, "trials": 2, "eval_images": 32, "bn_images": 32, "batch_size": 32,
             "calib_batches": 1},
            {"name": "joint", "type": "search", "input": "baseline", "space": "joint",
             "macs": 0.7, "bytes": 0.25, "trials": 2, "eval_images": 32, "bn_images": 32,
             "batch_size": 32, "calib_batches": 1},
        ],
    }  # fmt: skip
    result = compress(parse_recipe(recipe), tmp_path / "run", progress=False)
    rows = {r.stage: r for r in result.report.rows}
    assert rows["searched"].macs <= 0.5 * rows["baseline"].macs
    found = rows["searched"].search
    assert len(found["trials"]) == 3 and found["macs_ratio"] <= 0.5
    assert found["final_score"] == max(found["finalists"].values())  # 2 best and the start
    assert len(found["finalists"]) in (2, 3)
    assert any(after < before for before, after in rows["searched"].channels.values())
    mixed = rows["mixed"].search
    assert mixed["bytes_ratio"] <= 0.2 and set(mixed["bits"].values()) <= {4, 8}
    assert rows["mixed"].int8  # the stage's model is quantized
    titles = [title for title, _ in result.report._figures()]
    assert "search trajectory and candidates (searched)" in titles
    assert "search trajectory and candidates (mixed)" in titles
    assert "bits per layer (mixed)" in titles and "bits per layer (joint)" in titles
    joint = rows["joint"]
    assert joint.int8 and joint.macs <= 0.7 * rows["baseline"].macs
    assert joint.search["bytes_ratio"] <= 0.25 and joint.search["cost"] == "bytes_ratio"
    bad = {**recipe, "stages": [*recipe["stages"][:1], {**recipe["stages"][2], "finetune": quick}]}
    with pytest.raises(TorchslimError, match="not fine-tuned"):
        compress(parse_recipe(bad), tmp_path / "bad", progress=False)


def test_workers_spawned_by_the_search_share_its_study(tmp_path: Path) -> None:
    net, x, data = model_and_data()
    res = ts.search(net, x, {**CONFIG, "trials": 6, "workers": 2}, data=data,
                    out_dir=tmp_path, progress=False)  # fmt: skip
    done = _trials(tmp_path)
    assert len(done) == 6 and len({tuple(sorted(t.params.items())) for t in done}) == 6
    assert res.score == max(t.value for t in done)
    with pytest.raises(ConfigError, match="out_dir or storage"):
        ts.search(net, x, {**CONFIG, "workers": 2}, data=data, progress=False)


def test_a_bits_search_meets_the_bytes_budget_and_exports_its_bits(tmp_path: Path) -> None:
    net, x, data = model_and_data()
    space = BitSpace(net, x, data, choices=(4, 8), batch_size=32, calib_batches=1)
    budget = (
        space.bytes_ratio(dict.fromkeys(space.names, 4))
        + space.bytes_ratio(dict.fromkeys(space.names, 8))
    ) / 2  # room for some layers at 8 bits, not all
    cfg = {**CONFIG, "macs": None, "space": "bits", "bytes": budget, "trials": 3,
           "calib_batches": 1}  # fmt: skip
    res = ts.search(net, x, cfg, data=data, progress=False)
    done = [t for t in res.study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 3 and all(t.user_attrs["bytes_ratio"] <= budget + 1e-9 for t in done)
    assert done[0].params == dict.fromkeys(space.names, 4)  # the uniform start that fits
    assert res.bits is not None and set(res.bits) == set(space.names)
    assert res.bytes_ratio == pytest.approx(space.bytes_ratio(res.bits))
    assert "bytes" in str(res) and res.front
    report = ts.export_onnx(res.model, x, tmp_path / "m.onnx")
    assert report.int4_weights == sum(b == 4 for b in res.bits.values())
    with pytest.raises(ConfigError, match="bytes"):
        SearchConfig(space="bits")
    with pytest.raises(ConfigError, match="bits and joint"):
        SearchConfig(bytes=0.2)


def test_absolute_budgets_are_the_same_search_as_their_fractions() -> None:
    net, x, data = model_and_data()
    space = PruneSpace(net, x)
    cfg = {**CONFIG, "trials": 3}
    frac = ts.search(net, x, cfg, data=data, progress=False)
    count = ts.search(net, x, {**cfg, "macs": f"{0.5 * space.base_macs / 1e3}k"}, data=data,
                      progress=False)  # fmt: skip
    assert [t.params for t in frac.study.trials] == [t.params for t in count.study.trials]
    assert count.macs_ratio == frac.macs_ratio <= 0.5
    bits = BitSpace(net, x, data, choices=(4, 8), batch_size=32, calib_batches=1)
    int4 = bits.bytes(dict.fromkeys(bits.names, 4))
    res = ts.search(net, x, {**CONFIG, "macs": None, "space": "bits", "bytes": f"{int4}B",
                             "trials": 2, "calib_batches": 1}, data=data,
                    progress=False)  # fmt: skip
    assert res.bits == dict.fromkeys(bits.names, 4)  # only uniform int4 fits


def test_a_bits_choice_of_32_keeps_the_layer_float() -> None:
    net, x, data = model_and_data()
    space = BitSpace(net, x, data, choices=(4, 32), batch_size=32, calib_batches=1)
    bits = {n: 32 if i == 0 else 4 for i, n in enumerate(space.names)}
    model = space.quantized(bits)
    assert model.quant_state.layers == space.names[1:]
    assert space.bytes(bits) == pytest.approx(
        4 * space.sizes[0] + sum(space.sizes[1:]) / 2 + 4 * space.other
    )
    assert space.bytes_ratio(dict.fromkeys(space.names, 32)) == pytest.approx(
        (4 * sum(space.sizes) + 4 * space.other) / space.float_bytes
    )


def test_a_joint_search_prunes_and_quantizes_within_both_budgets(tmp_path: Path) -> None:
    net, x, data = model_and_data()
    cfg = {**CONFIG, "space": "joint", "macs": 0.6, "bytes": 0.2, "trials": 4,
           "calib_batches": 1}  # fmt: skip
    res = ts.search(net, x, cfg, data=data, progress=False)
    done = [t for t in res.study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 4
    assert all(t.user_attrs["macs_ratio"] <= 0.6 + 1e-9 for t in done)
    assert all(t.user_attrs["bytes_ratio"] <= 0.2 + 1e-9 for t in done)
    assert {k.split(":")[0] for k in done[0].params} == {"ratio", "bits"}
    assert res.ratios and res.bits and res.macs_ratio <= 0.6 and res.bytes_ratio <= 0.2
    assert "MACs" in str(res) and "bytes" in str(res)
    # the model is pruned (fewer channels) and quantized (its layers carry weight quantizers)
    assert res.model.quant_state.layers
    first = dict(res.model.named_modules())[res.model.quant_state.layers[0]]
    kept = res.channels[next(iter(res.channels))][1]
    assert first.weight.shape[0] == kept < 16
    # the predicted bytes follow the exported file: int4 layers packed
    report = ts.export_onnx(res.model, x, tmp_path / "m.onnx")
    assert report.int4_weights == sum(b == 4 for b in res.bits.values())


def test_a_bits_search_with_act_bits_searches_each_layers_input_bits() -> None:
    from torchslim.quant.fake_quant import FakeQuantize

    net, x, data = model_and_data()
    cfg = {**CONFIG, "macs": None, "space": "bits", "bytes": 0.3, "act_bits": [4, 8],
           "trials": 3, "calib_batches": 1}  # fmt: skip
    res = ts.search(net, x, cfg, data=data, progress=False)
    done = [t for t in res.study.trials if t.state.name == "COMPLETE"]
    layers = list(res.bits)
    assert set(done[0].params) == {*layers, *(f"act:{n}" for n in layers)}
    assert done[0].params[f"act:{layers[0]}"] == 8  # the start: the most activation bits
    assert res.act_bits is not None and set(res.act_bits) == set(layers)
    state = res.model.quant_state
    quantizers = dict(res.model.named_modules())
    for name in layers:
        found = quantizers[state.layer_input[name]]
        assert isinstance(found, FakeQuantize) and found.spec.bits == res.act_bits[name]


def test_candidates_can_be_fine_tuned_a_few_steps_before_scoring(monkeypatch) -> None:
    import torchslim.auto.evaluate as evaluate_module

    calls = []
    tune = evaluate_module.few_step_tune

    def spy(model, data, batch_size, steps, lr, *rest):
        calls.append((steps, lr))
        return tune(model, data, batch_size, steps, lr, *rest)

    monkeypatch.setattr(evaluate_module, "few_step_tune", spy)
    net, x, data = model_and_data()
    res = ts.search(net, x, {**CONFIG, "trials": 3, "tune_steps": 2, "tune_lr": 0.05}, data=data,
                    progress=False)  # fmt: skip
    assert calls == [(2, 0.05)] * 3 and res.macs_ratio <= 0.5


def test_finalists_are_fine_tuned_on_the_training_images_outside_the_held_out_split(
    monkeypatch, tmp_path: Path
) -> None:
    import torchslim.auto.evaluate as evaluate_module

    calls = []
    tune = evaluate_module.few_step_tune

    def spy(model, data, batch_size, steps, lr, *rest):
        calls.append((len(data), steps, lr))
        return tune(model, data, batch_size, steps, lr, *rest)

    monkeypatch.setattr(evaluate_module, "few_step_tune", spy)
    net, x, data = model_and_data()
    cfg = {**CONFIG, "trials": 6, "finalists": 2, "final_steps": 3, "final_lr": 0.05}
    res = ts.search(net, x, cfg, data=data, out_dir=tmp_path, progress=False)
    done = sorted((t for t in res.study.trials if t.state.name == "COMPLETE"),
                  key=lambda t: -t.value)  # fmt: skip
    finals = {int(k): v for k, v in res.study.user_attrs["final_scores"].items()}
    # the two best by score and the start (trial 0), each fine-tuned once, on the 64 images
    # the 32 held-out ones leave
    assert set(finals) == {done[0].number, done[1].number, 0}
    assert calls == [(len(data) - CONFIG["eval_images"], 3, 0.05)] * len(finals)
    chosen = max(finals, key=lambda n: (finals[n], res.study.trials[n].value))
    assert res.final_score == finals[chosen] and str(res.final_score)[:4] in str(res)
    assert res.ratios == PruneSpace(net, x).expand(res.study.trials[chosen].params)
    # the model returned is pruned, not fine-tuned: a fresh pruning of the chosen candidate
    fresh = PruneSpace(net, x).outcome(res.study.trials[chosen].params)[0].state_dict()
    assert all(torch.equal(p, fresh[n]) for n, p in res.model.state_dict().items())
    calls.clear()  # resumed: the finalists' scores are kept in the study, none tuned again
    again = ts.search(net, x, cfg, data=data, out_dir=tmp_path, resume=True, progress=False)
    assert calls == [] and again.ratios == res.ratios


def test_the_finalists_fine_tune_decides_not_the_score(monkeypatch) -> None:
    net, x, data = model_and_data()
    # a fine-tune that reverses the ranking: the lowest-scored finalist wins
    monkeypatch.setattr(PruneSpace, "final_score",
                        lambda self, params, *a: -self.evaluate(params, *a[:2], 32))  # fmt: skip
    res = ts.search(net, x, {**CONFIG, "trials": 6, "finalists": 3}, data=data, progress=False)
    finals = {int(k) for k in res.study.user_attrs["final_scores"]}
    lowest = min(finals, key=lambda n: res.study.trials[n].value)
    best = res.study.best_trial
    if res.study.trials[lowest].value < best.value:  # else every finalist ties
        assert res.score == res.study.trials[lowest].value < best.value
    assert res.final_score == -res.study.trials[lowest].value


def test_a_finalist_whose_fine_tune_diverges_names_final_lr() -> None:
    net, x, data = model_and_data()
    cfg = {**CONFIG, "trials": 2, "finalists": 1, "final_steps": 20, "final_lr": 1e12}
    with pytest.raises(ConfigError, match=r"lower final_lr \(it is 1e\+12\)"):
        ts.search(net, x, cfg, data=data, progress=False)


@pytest.mark.parametrize(
    "bad",
    [{"finalists": -1}, {"finalists": 2, "final_steps": 0}, {"finalists": 2, "final_lr": 0},
     {"finalists": 2, "space": "bits", "bytes": 0.3, "macs": None}],
)  # fmt: skip
def test_finalists_settings_are_checked(bad: dict) -> None:
    with pytest.raises(ConfigError, match="final"):
        SearchConfig(**bad)


def test_a_bits_search_scored_by_sqnr_needs_no_labels() -> None:
    net, x, data = model_and_data()
    cfg = {**CONFIG, "macs": None, "space": "bits", "bytes": 0.3, "score": "sqnr",
           "weight_bits": [2, 8], "trials": 3, "calib_batches": 1}  # fmt: skip
    res = ts.search(net, x, cfg, data=data, progress=False)
    done = [t for t in res.study.trials if t.state.name == "COMPLETE"]
    assert all(t.value > 0 for t in done)  # dB: outputs closer to the float model's than not
    assert res.score_unit == "dB" and " dB" in str(res)
    eights = [sum(b == 8 for b in t.params.values()) for t in done]
    best = max(done, key=lambda t: t.value)
    assert sum(b == 8 for b in best.params.values()) == max(eights)  # more 8-bit layers: closer


def test_tied_groups_share_one_ratio_variable() -> None:
    net, x, data = model_and_data()
    names = PruneSpace(net, x).names
    res = ts.search(net, x, {**CONFIG, "trials": 3, "tie": ["*"]}, data=data, progress=False)
    done = [t for t in res.study.trials if t.state.name == "COMPLETE"]
    assert all(list(t.params) == ["*"] for t in done)  # one variable for every group
    assert set(res.ratios) == set(names) and len(set(res.ratios.values())) == 1
    with pytest.raises(ConfigError, match="tie: 'nope' matches no prunable group"):
        ts.search(net, x, {**CONFIG, "trials": 1, "tie": ["nope"]}, data=data, progress=False)


def test_a_trial_failed_by_a_late_heartbeat_keeps_its_score(tmp_path: Path, monkeypatch) -> None:
    # A peer marks a running trial failed when its heartbeat is over grace_seconds late (a
    # loaded machine); Optuna then refuses to record it. The worker must go on, not crash.
    calls = []
    evaluate = PruneSpace.evaluate

    def late(self, params, *args):
        value = evaluate(self, params, *args)
        calls.append(value)
        if len(calls) == 2:  # what another worker's fail_stale_trials does to this trial
            peer = optuna.load_study(study_name="torchslim-search",
                                     storage=f"sqlite:///{tmp_path / 'search.db'}")  # fmt: skip
            (running,) = peer.get_trials(states=(optuna.trial.TrialState.RUNNING,))
            peer._storage.set_trial_state_values(running._trial_id, optuna.trial.TrialState.FAIL)
        return value

    monkeypatch.setattr(PruneSpace, "evaluate", late)
    net, x, data = model_and_data()
    res = ts.search(net, x, {**CONFIG, "trials": 4}, data=data, out_dir=tmp_path, progress=False)
    done = _trials(tmp_path)
    assert len(done) == 4 and len(calls) == 4  # the failed trial's score was not recomputed
    assert len(_trials(tmp_path, "FAIL")) == 1
    assert calls[1] in [t.value for t in done] and res.score == max(calls)


def test_ratios_that_keep_the_same_channels_are_one_candidate() -> None:
    net, x, data = model_and_data()  # two 16-channel groups: at round_to 4, 16/12/8/4 kept
    res = ts.search(net, x, {**CONFIG, "round_to": 4, "trials": 6}, data=data, progress=False)
    space = PruneSpace(net, x, round_to=4)
    done = [t for t in res.study.trials if t.state.name == "COMPLETE"]
    kept = [tuple(space.channels(space.expand(t.params)).values()) for t in done]
    assert len(done) == 6 and len(set(map(str, kept))) == 6
    assert all(len(d.choices) == 4 for d in done[0].distributions.values())


def test_the_likelihood_score_is_100_exp_minus_the_held_out_loss() -> None:
    from torch.utils.data import DataLoader

    from torchslim.auto import holdout_split
    from torchslim.auto.evaluate import recalibrate_batchnorm
    from torchslim.train import evaluate

    net, x, data = model_and_data()
    res = ts.search(net, x, {**CONFIG, "trials": 3, "score": "likelihood"}, data=data,
                    progress=False)  # fmt: skip
    held, bn = holdout_split(data, CONFIG["eval_images"], CONFIG["bn_images"], seed=0)
    model = recalibrate_batchnorm(res.model, DataLoader(bn, batch_size=32))
    found = evaluate(model, held, batch_size=32)
    assert res.score == pytest.approx(100 * math.exp(-found.loss), rel=1e-5)
    assert res.score != pytest.approx(100 * found.accuracy)
    with pytest.raises(ConfigError, match="score"):
        SearchConfig(score="loss")


def test_a_sensitivity_start_prunes_the_less_sensitive_group_more() -> None:
    net, x, _ = model_and_data()
    space = PruneSpace(net, x)
    cfg = SearchConfig(macs=0.5, start="sensitivity")
    calm, touchy = space.variable_names
    space.losses = {calm: [(0.0, 0.0), (0.8, 1.0)], touchy: [(0.0, 0.0), (0.8, 40.0)]}
    chosen = space.start(cfg)
    assert chosen[calm] > chosen[touchy] and space.meets(chosen, cfg)
    # the lowest threshold that fits: one choice less on the pruned group is over budget
    options = space.variables(cfg)[calm]
    less = {**chosen, calm: options[options.index(chosen[calm]) - 1]}
    assert space.loss(calm, less[calm]) < space.loss(touchy, chosen[touchy]) or not space.meets(
        less, cfg
    )
    space.losses = {calm: [(0.0, 0.0), (0.8, 40.0)], touchy: [(0.0, 0.0), (0.8, 1.0)]}
    flipped = space.start(cfg)
    assert flipped[touchy] > flipped[calm]


def test_a_search_can_start_from_its_sensitivity_analysis(tmp_path: Path, monkeypatch) -> None:
    from torchslim.auto.space import SENSITIVITY_POINTS

    spaces = []
    measure = PruneSpace.measure_sensitivity

    def spy(self, *args, **kwargs):
        spaces.append(self)
        return measure(self, *args, **kwargs)

    monkeypatch.setattr(PruneSpace, "measure_sensitivity", spy)
    net, x, data = model_and_data()
    cfg = {**CONFIG, "trials": 3, "start": "sensitivity"}
    res = ts.search(net, x, cfg, data=data, out_dir=tmp_path, progress=False)
    (space,) = spaces
    for points in space.losses.values():  # (0, 0) first, then at most 8 ratios, loss rising
        assert points[0] == (0.0, 0.0) and len(points) <= 1 + SENSITIVITY_POINTS
        assert all(a[1] <= b[1] for a, b in itertools.pairwise(points))
    first = res.study.trials[0].params
    assert first == space.sensitivity_choice(SearchConfig(**cfg))
    assert space.meets(first, SearchConfig(**cfg))
    ts.search(net, x, {**cfg, "trials": 5}, data=data, out_dir=tmp_path, resume=True,
              progress=False)  # fmt: skip
    assert len(spaces) == 1  # resumed: not measured again
    with pytest.raises(ConfigError, match="start"):
        SearchConfig(space="bits", bytes=0.2, start="sensitivity")


@pytest.mark.filterwarnings("ignore::UserWarning")  # BERT's mask check reads values
def test_a_hugging_face_classifier_is_searched_from_keyword_batches() -> None:
    pytest.importorskip("transformers")
    sys.path.insert(0, str(HERE.parent))
    from hf_classifier import TokenDataset, example_tokens, tiny_classifier

    bert, x = tiny_classifier(), example_tokens()
    cfg = {"macs": 0.6, "trials": 3, "eval_images": 32, "bn_images": 32, "batch_size": 16,
           "tune_steps": 2, "score": "likelihood"}  # fmt: skip
    res = ts.search(bert, x, cfg, data=TokenDataset(), progress=False)
    assert len([t for t in res.study.trials if t.state.name == "COMPLETE"]) == 3
    assert 0 < res.score <= 100 and res.macs_ratio <= 0.6
    assert res.model(**x).logits.shape == (2, 3)
    # the hidden size (behind the classifier head, a variable too) left whole by ignore
    hidden = {**cfg, "trials": 2, "macs": 0.8, "ignore": ["bert.embeddings"]}
    res = ts.search(bert, x, hidden, data=TokenDataset(), progress=False)
    assert "bert.encoder.layer.0.attention.output.dense" not in res.channels  # its producer
    assert res.model.bert.embeddings.word_embeddings.embedding_dim == 48
    with pytest.raises(ConfigError, match="matches no module"):
        ts.search(bert, x, {**hidden, "ignore": ["no.such.module"]}, data=TokenDataset(),
                  progress=False)  # fmt: skip
