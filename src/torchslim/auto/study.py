"""``ts.search``: per-layer pruning ratios and weight bits searched under MACs / parameter /
latency / bytes budgets, on Optuna."""

from __future__ import annotations

import logging
import multiprocessing
import random
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from torchslim._tensors import Inputs
from torchslim.auto.bits import BitSpace
from torchslim.auto.config import FLOAT_BITS, SearchConfig, SpaceKind, Start
from torchslim.auto.evaluate import holdout_split, tuning_split
from torchslim.auto.joint import RATIO, JointSpace
from torchslim.auto.samplers import make_sampler, pareto
from torchslim.auto.space import PruneSpace
from torchslim.config import from_dict
from torchslim.data.sampling import in_memory
from torchslim.errors import ConfigError
from torchslim.latency import VERIFY_TOLERANCE
from torchslim.train.trainer import as_dataset

log = logging.getLogger("torchslim.search")
# proposals in a row that repeat scored candidates after which a search stops: the candidates
# its sampler can reach within the budget are all scored (a small space)
EXHAUSTED_AFTER = 100

STORAGE_FILE = "search.db"


@dataclass
class SearchResult:
    """The best candidate's model, score and Optuna study with every trial, and what the
    candidate is: a pruning search gives its per-group ``ratios``, channel counts and
    predicted MACs / parameter (/ latency) ratios, its model pruned (not fine-tuned); a bits
    search (``space: bits``) the per-layer ``bits`` and ``bytes_ratio``, its model quantized
    (ratios and channels empty, MACs and parameters 1); a joint search all of them, its model
    pruned then quantized."""

    model: nn.Module
    score: float
    study: optuna.Study
    ratios: dict[str, float] = field(default_factory=dict)
    macs_ratio: float = 1.0
    params_ratio: float = 1.0
    channels: dict[str, list[int]] = field(default_factory=dict)  # [before, kept] per group
    latency_ratio: float | None = None  # predicted ORT latency over the model's (a budget)
    bits: dict[str, int] | None = None  # bits / joint search: weight bits per layer
    act_bits: dict[str, int] | None = None  # ... with act_bits choices: input bits per layer
    bytes_ratio: float | None = None  # bits / joint search: predicted bytes over the float's
    score_unit: str = "%"  # "dB" where candidates were scored by SQNR
    # a latency budget: the chosen model's latency over the model's, measured in ORT
    measured_latency_ratio: float | None = None
    # with finalists: the chosen candidate's score after its final_steps fine-tune
    final_score: float | None = None

    @property
    def front(self) -> list[FrozenTrial]:
        """The evaluated trials no other beats on both score and MACs (bits, joint: bytes)."""
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        cost = "macs_ratio" if self.bits is None else "bytes_ratio"
        return pareto(done, {"value": True, cost: False})

    def __str__(self) -> str:
        done = len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        parts = []
        if self.ratios:
            latency = "" if self.latency_ratio is None else f", latency {self.latency_ratio:.3f}"
            parts.append(f"MACs {self.macs_ratio:.3f}, params {self.params_ratio:.3f}{latency} "
                         "of the model")  # fmt: skip
        if self.bits is not None:
            values = list(self.bits.values())
            spread = ", ".join(f"{values.count(b)} layers at {'float' if b == FLOAT_BITS else b}"
                               f"{'' if b == FLOAT_BITS else ' bits'}"
                               for b in sorted(set(values)))  # fmt: skip
            parts.append(f"bytes {self.bytes_ratio:.3f} of the float model ({spread})")
        score = f"{self.score:.2f}{'%' if self.score_unit == '%' else ' ' + self.score_unit}"
        if self.final_score is not None:
            score += f" ({self.final_score:.2f}{self.score_unit} after the finalists' fine-tune)"
        return f"best of {done} evaluated candidates: score {score}, " + "; ".join(parts)


def _storage(cfg: SearchConfig, out_dir: Path | None) -> optuna.storages.BaseStorage | str | None:
    """Optuna storage: ``config.storage`` (an RDB URL, with heartbeats so that a killed
    worker's trial is marked failed after ``grace_seconds``; anything else Optuna accepts as
    it is), else a SQLite file in ``out_dir``, else memory."""
    url = cfg.storage
    if not url:
        if out_dir is None:
            return None  # in memory
        out_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{(out_dir / STORAGE_FILE).resolve()}"
    if url.split(":", 1)[0].split("+", 1)[0] not in ("sqlite", "postgresql", "mysql"):
        return url
    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 4
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=cfg.heartbeat_seconds, grace_period=cfg.grace_seconds
                )
        except Exception:  # workers starting together race to create the schema: retry
            if attempt == 2:
                raise
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


def _study(cfg: SearchConfig, storage: optuna.storages.BaseStorage | str | None,
           sampler: optuna.samplers.BaseSampler, resume: bool) -> optuna.Study:  # fmt: skip
    if storage is not None and not resume:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        if cfg.study_name in names:
            raise ConfigError(
                f"a search named {cfg.study_name!r} is already in {storage}; pass resume=True "
                "(CLI: --resume) to continue it, or give another study_name or folder"
            )
    return optuna.create_study(study_name=cfg.study_name, storage=storage, sampler=sampler,
                               direction="maximize", load_if_exists=resume)  # fmt: skip


Space = PruneSpace | BitSpace | JointSpace


def _open(cfg: SearchConfig, space: Space, out_dir: str | Path | None, resume: bool,
          sampler: optuna.samplers.BaseSampler, scoring: tuple[Dataset, Dataset],
          progress: bool) -> optuna.Study:  # fmt: skip
    """The study (made, or loaded to resume or join); a new one gets its first candidate:
    the smallest uniform ratio (the most bits) that meets the budget, or with ``start:
    sensitivity`` the allocation of a sensitivity analysis on the ``scoring`` data (held-out,
    BatchNorm images)."""
    storage = _storage(cfg, Path(out_dir) if out_dir is not None else None)
    study = _study(cfg, storage, sampler, resume)
    if not study.trials:
        if cfg.start is Start.SENSITIVITY and isinstance(space, PruneSpace):
            space.measure_sensitivity(cfg, *scoring, progress=progress)
        study.enqueue_trial(space.start(cfg))
    return study


def _make_space(cfg: SearchConfig, model: nn.Module, example_inputs: Inputs,
                bn_data: Dataset) -> Space:  # fmt: skip
    bits = None
    if cfg.space is not SpaceKind.PRUNE:
        bits = BitSpace(model, example_inputs, bn_data, choices=cfg.weight_bits,
                        act_choices=cfg.act_bits, score=cfg.score.value, quant=cfg.quant,
                        batch_size=cfg.batch_size, calib_batches=cfg.calib_batches)  # fmt: skip
        if cfg.space is SpaceKind.BITS:
            return bits
    space = PruneSpace(model, example_inputs, importance=cfg.importance, round_to=cfg.round_to,
                       tune_steps=cfg.tune_steps, tune_lr=cfg.tune_lr, tie=cfg.tie,
                       score=cfg.score.value, ignore=cfg.ignore)  # fmt: skip
    if cfg.latency is not None:
        space.add_latency(cfg.latency_batch_size, cfg.latency_threads, grid=cfg.grid,
                          seed=cfg.seed)  # fmt: skip
    return space if bits is None else JointSpace(space, bits)


def search(
    model: nn.Module,
    example_inputs: Inputs,
    config: SearchConfig | Mapping[str, Any] | None = None,
    *,
    data: Dataset,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> SearchResult:
    """Search per-layer pruning ratios, weight bits, or both under budgets; the model itself
    is not changed.

    ``space: prune`` (the default): one variable per prunable channel group of ``model`` (its
    ratio on ``config.grid``); ``space: bits``: one per quantizable layer (its weight bits
    from ``weight_bits``, 32 keeping it float), scored after post-training quantization;
    ``space: joint``: both. Candidates over budget (``macs``, ``params``: predicted from the
    trace; ``latency``: from the ONNX Runtime look-up table; ``bytes``: from the bits; each a
    fraction or an absolute value such as ``"40M"``, ``"2.5ms"``, ``"150kB"``) are rejected
    before any forward pass; the others are scored by top-1 accuracy on held-out *training*
    images of ``data`` after re-estimating BatchNorm statistics. The strategy is an Optuna
    sampler (``sa``: PaddleSlim's simulated annealing; ``tpe``, ``random``, ``nsga2``).
    Trials are kept in Optuna storage (``out_dir/search.db`` by default, or
    ``config.storage``); ``resume=True`` continues a stopped search, or joins one other
    workers run on the same storage.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
        ...                     nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
        >>> _ = net(torch.randn(1, 1, 8, 8))
        >>> data = TensorDataset(torch.randn(40, 1, 8, 8), torch.randint(0, 3, (40,)))
        >>> res = search(net, torch.randn(1, 1, 8, 8), {"macs": 0.6, "trials": 4,
        ...              "eval_images": 16, "bn_images": 16}, data=data, progress=False)
        >>> res.macs_ratio <= 0.6, len(res.ratios)
        (True, 2)
    """
    cfg = from_dict(SearchConfig, config)
    dataset = as_dataset(data)[0]
    # every candidate reads the same few images: decode them once
    held_out, bn_data = (
        in_memory(part) for part in holdout_split(dataset, cfg.eval_images, cfg.bn_images, cfg.seed)
    )
    space = _make_space(cfg, model, example_inputs, bn_data)
    tune_data = tuning_split(dataset, cfg.eval_images, cfg.seed)  # the finalists' fine-tune

    def feasible(params: Mapping[str, Any]) -> bool:
        return space.meets(params, cfg)

    if cfg.workers > 1 and cfg.storage is None and out_dir is None:
        raise ConfigError("workers > 1 share a study in storage: give out_dir or storage")
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the bar shows progress
    alone = replace(cfg, workers=1)

    def finish(study: optuna.Study) -> SearchResult:
        def more(trials: int) -> None:  # on in this process (any other workers are done)
            _run(replace(alone, trials=trials), space, held_out, bn_data, feasible, out_dir,
                 True, progress, study)  # fmt: skip

        def rescore(params: Mapping[str, Any]) -> float:
            assert isinstance(space, PruneSpace)  # finalists: space prune (SearchConfig)
            return space.final_score(params, held_out, bn_data, tune_data, cfg)

        return _result(cfg, space, study, more, rescore, progress)

    try:
        if cfg.workers == 1:
            return finish(_run(cfg, space, held_out, bn_data, feasible, out_dir, resume,
                               progress))  # fmt: skip
        # The study is made (or checked for resume) here first, then the others join it.
        _open(cfg, space, out_dir, resume, make_sampler(cfg), (held_out, bn_data), progress)
        spawn = multiprocessing.get_context("spawn")
        helpers = [spawn.Process(target=_join, args=(model, example_inputs, asdict(alone), data,
                                                     out_dir), daemon=True)
                   for _ in range(cfg.workers - 1)]  # fmt: skip
        for h in helpers:
            h.start()
        try:
            _run(alone, space, held_out, bn_data, feasible, out_dir, True, progress)
        finally:
            for h in helpers:
                h.join()
        failed = [h.exitcode for h in helpers if h.exitcode]
        if failed:
            log.warning("search: %d worker process(es) failed (exit codes %s)", len(failed), failed)
        return finish(_run(alone, space, held_out, bn_data, feasible, out_dir, True, False))
    finally:
        optuna.logging.set_verbosity(verbosity)


def _join(model: nn.Module, example_inputs: Inputs, config: dict[str, Any], data: Dataset,
          out_dir: str | Path | None) -> None:  # fmt: skip
    """A worker process: join the study and evaluate candidates until it holds enough."""
    torch.set_num_threads(1)
    # the main process verifies and fine-tunes the finalists
    config = {**config, "verify_latency": 0, "finalists": 0}
    search(model, example_inputs, config, data=data, out_dir=out_dir, resume=True,
           progress=False)  # fmt: skip


def _run(
    cfg: SearchConfig,
    space: Space,
    held_out: Dataset,
    bn_data: Dataset,
    feasible: Callable[[Mapping[str, Any]], bool],
    out_dir: str | Path | None,
    resume: bool,
    progress: bool,
    study: optuna.Study | None = None,
) -> optuna.Study:
    """Evaluate candidates until ``cfg.trials`` are complete in the study (``study``, or the
    one in storage, made or loaded)."""
    variables = space.variables(cfg)
    if study is None:
        study = _open(
            cfg,
            space,
            out_dir,
            resume,
            make_sampler(cfg, feasible, space.by_size(cfg)),
            (held_out, bn_data),
            progress,
        )
    # the trial the objective last finished, scored or pruned (value None), to recognise one
    # a peer marked failed while it ran
    last: dict[str, Any] = {}
    repeats = [0]  # proposals in a row of candidates already scored

    def objective(trial: optuna.Trial) -> float:
        last.clear()
        try:
            value = candidate(trial)
        except optuna.TrialPruned:
            last.update(trial=trial, value=None)
            raise
        last.update(trial=trial, value=value)
        return value

    def candidate(trial: optuna.Trial) -> float:
        # Optuna's first heartbeat comes from a thread started after ask(): a worker killed
        # before it leaves a RUNNING trial no heartbeat ever fails. Beat now.
        storage = study._storage
        if isinstance(storage, optuna.storages.RDBStorage) and storage.heartbeat_interval:
            storage.record_heartbeat(trial._trial_id)
        if complete() >= cfg.trials:
            study.stop()
            raise optuna.TrialPruned("the trial budget is taken (by other workers' trials)")
        ratios = {n: trial.suggest_categorical(n, choices) for n, choices in variables.items()}
        live = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        same = [t.number for t in live if t.number != trial.number and t.params == ratios]
        if same:
            # A sampler proposed a candidate already scored (TPE, random and NSGA-II may), or
            # two workers drew one at once (the sampler saw neither): the trial that sees the
            # other gives way, so no candidate is evaluated twice.
            trial.set_user_attr("duplicate_of", same[0])
            repeats[0] += 1
            if repeats[0] >= EXHAUSTED_AFTER:  # a small space: every candidate near the
                # budget is scored; the sampler only repeats them
                log.warning("search: stopped at %d of %d trials: the last %d proposals "
                            "were all candidates already scored (the space within the budget "
                            "is exhausted)", complete(), cfg.trials, repeats[0])  # fmt: skip
                study.stop()
            raise optuna.TrialPruned(f"trial {same[0]} has this candidate")
        repeats[0] = 0
        measures = space.measures(ratios)
        for key, value in measures.items():
            trial.set_user_attr(key, value)
        if not feasible(ratios):
            costs = ", ".join(f"{k.removesuffix('_ratio')} {v:.3f}" for k, v in measures.items())
            raise optuna.TrialPruned(f"over budget: {costs}")
        # Only a candidate about to be scored takes a place in the budget (a pruned one never
        # completes). Mark it, then count every other marked running trial: each worker
        # writes its mark before it reads the others', so of two workers marking at once at
        # least one sees the other and the budget is never overrun. Both may give way: the
        # trial is dropped (not the search), and after a short random wait the worker checks
        # again whether the others' trials completed the budget.
        trial.set_user_attr("scoring", True)
        others = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                  if t.number != trial.number and t.user_attrs.get("scoring")]  # fmt: skip
        if complete() + len(others) >= cfg.trials:
            time.sleep(random.uniform(0.05, 0.5))
            raise optuna.TrialPruned("the trial budget is taken (by other workers' trials)")
        return space.evaluate(ratios, held_out, bn_data, cfg.batch_size)

    def complete() -> int:
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    bar = tqdm(total=cfg.trials, initial=min(complete(), cfg.trials), desc="search",
               unit="trial", disable=None if progress else True)  # fmt: skip

    def on_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        n = complete()
        bar.n = min(n, cfg.trials)
        if n:
            bar.set_postfix(best=f"{study.best_value:.2f}%")
        bar.refresh()
        if n >= cfg.trials:
            study.stop()

    try:
        while complete() < cfg.trials and repeats[0] < EXHAUSTED_AFTER:
            try:
                study.optimize(objective, n_trials=50 * cfg.trials, callbacks=[on_trial])
                break
            except Exception:
                if not _failed_by_peer(study, last, keep=complete() < cfg.trials):
                    raise
                last.clear()  # handled: a later error is not mistaken for it
    finally:
        bar.close()
    if complete() == 0:
        raise ConfigError(
            "search: no candidate met the budget; loosen macs/params/latency/bytes, raise "
            "max_ratio or add narrower weight_bits"
        )
    return study


def _failed_by_peer(study: optuna.Study, last: Mapping[str, Any], keep: bool) -> bool:
    """Whether the trial the objective just scored was marked failed meanwhile (by another
    worker, when this one's heartbeat came more than ``grace_seconds`` late: a loaded
    machine); Optuna then refuses to record its outcome. A score is kept (if ``keep``: the
    budget has room) as a new finished trial with the same candidate; the search goes on."""
    trial = last.get("trial")
    if trial is None or study._storage.get_trial(trial._trial_id).state is not TrialState.FAIL:
        return False
    kept = last["value"] is not None and keep
    log.warning("search: trial %d was marked failed by another worker while it ran (its "
                "heartbeat was late; raise grace_seconds on a loaded machine)%s", trial.number,
                "; its score is kept as a new trial" if kept else "")  # fmt: skip
    if not kept:
        return True
    attrs = {k: v for k, v in trial.user_attrs.items() if k != "scoring"}
    study.add_trial(optuna.trial.create_trial(params=trial.params,
                                              distributions=trial.distributions,
                                              value=last["value"], user_attrs=attrs))  # fmt: skip
    return True


def _result(cfg: SearchConfig, space: Space, study: optuna.Study,
            more: Callable[[int], None], rescore: Callable[[Mapping[str, Any]], float],
            progress: bool) -> SearchResult:  # fmt: skip
    """The search's result: its best trial, after the latency check if there is one (which
    may evaluate more candidates: ``more(n)`` runs the search on until ``n`` are done), and
    with ``finalists``, the best of those after their fine-tune (``rescore``)."""
    best, measured, final = study.best_trial, None, None
    prune = space.prune if isinstance(space, JointSpace) else space
    if isinstance(prune, PruneSpace) and prune.latency is not None and cfg.verify_latency:
        best, measured = _verify_latency(cfg, space, prune, study, more)
    if cfg.finalists and isinstance(space, PruneSpace):
        verified = best
        best, final = _finalists(cfg, space, study, best, rescore, progress)
        if measured is not None and best.number != verified.number:
            measured = space.measured_latency_ratio(space.expand(best.params))
    model, fields = space.outcome(best.params)
    return SearchResult(model, float(best.value), study, measured_latency_ratio=measured,
                        final_score=final, **fields)  # fmt: skip


FINAL_SCORES = "final_scores"  # study user attribute: {trial number: finalist score}


def _finalists(cfg: SearchConfig, space: PruneSpace, study: optuna.Study, best: FrozenTrial,
               rescore: Callable[[Mapping[str, Any]], float],
               progress: bool) -> tuple[FrozenTrial, float]:  # fmt: skip
    """(the finalist with the highest score after its fine-tune, that score). Finalists:
    ``best``, the search's first candidate (its start) and the next best by score, up to
    ``cfg.finalists`` besides the start, all within the budget. Scores are kept in the
    study (a resumed search does not fine-tune a finalist again)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    fits = sorted((t for t in done if space.meets(t.params, cfg)), key=lambda t: -t.value)
    picks = {best.number: best}
    for trial in fits:
        if len(picks) >= cfg.finalists:
            break
        picks.setdefault(trial.number, trial)
    start = next((t for t in fits if t.number == 0), None)  # the enqueued start, if in budget
    if start is not None:
        picks.setdefault(start.number, start)
    scores: dict[str, float] = dict(study.user_attrs.get(FINAL_SCORES, {}))
    for trial in tqdm(list(picks.values()), desc="finalists", unit="candidate",
                      disable=None if progress else True):  # fmt: skip
        key = str(trial.number)
        if key not in scores:
            scores[key] = rescore(trial.params)
            study.set_user_attr(FINAL_SCORES, scores)
        log.info("search: finalist trial %d: score %.2f, after %d fine-tune steps %.2f",
                 trial.number, trial.value, cfg.final_steps, scores[key])  # fmt: skip
    chosen = max(picks.values(), key=lambda t: (scores[str(t.number)], t.value))
    return chosen, scores[str(chosen.number)]


def _latency(prune: PruneSpace, ratios: Mapping[str, float]) -> float:
    return prune.latency_ratio(ratios) or 1.0


def _verify_latency(cfg: SearchConfig, space: Space, prune: PruneSpace, study: optuna.Study,
                    more: Callable[[int], None]) -> tuple[FrozenTrial, float]:  # fmt: skip
    """Measure the best candidate whole; where the table's prediction is off by more than
    ``VERIFY_TOLERANCE`` (2.5%), correct the predictions by the measurement
    (``prune.correct_latency``) and choose again among the evaluated candidates that meet
    the budget so corrected (none, or the best of them more than 5% under it: evaluate a
    quarter of ``cfg.trials`` more, at least 10, proposed under the corrected budget); up to
    ``cfg.verify_latency`` measurements. Returns the chosen trial and its measured latency
    ratio."""

    def complete() -> list[FrozenTrial]:
        return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))

    done = complete()
    best = max(done, key=lambda t: t.value)
    measured: dict[int, float] = {}

    def ratios(trial: FrozenTrial) -> dict[str, float]:
        names = prune.variable_names
        return prune.expand({n: trial.params[RATIO + n if prune is not space else n]
                             for n in names})  # fmt: skip

    budget = cfg.fraction("latency", prune.base_ms) or 1.0

    def rank(trial: FrozenTrial) -> tuple[float, float]:  # equal scores: the one spending more
        return trial.value, _latency(prune, ratios(trial))

    for _ in range(cfg.verify_latency):
        if best.number not in measured:
            measured[best.number] = prune.measured_latency_ratio(ratios(best))
        predicted = _latency(prune, ratios(best))
        log.info("search: the chosen candidate's latency ratio: predicted %.3f, measured %.3f",
                 predicted, measured[best.number])  # fmt: skip
        if abs(measured[best.number] / predicted - 1) <= VERIFY_TOLERANCE:
            break
        prune.correct_latency(ratios(best), measured[best.number])
        fits = [t for t in done if space.meets(t.params, cfg)]
        if not fits or _latency(prune, ratios(max(fits, key=rank))) < 0.95 * budget:
            # nothing evaluated meets the corrected budget, or the best that does leaves
            # more than 5% of it unspent (candidates filled to the old edge are all over
            # the new one): search on under the corrected budget
            log.info("search: no evaluated candidate near the corrected latency budget; "
                     "evaluating more")  # fmt: skip
            study.enqueue_trial(space.start(cfg))  # uniform, within the corrected budget
            more(len(done) + max(10, cfg.trials // 4))
            done = complete()
            fits = [t for t in done if space.meets(t.params, cfg)]
        if not fits:  # still none: keep this one, measured
            break
        best = max(fits, key=rank)
    if best.number not in measured:
        measured[best.number] = prune.measured_latency_ratio(ratios(best))
    return best, measured[best.number]
