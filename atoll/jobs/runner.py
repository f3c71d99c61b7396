"""Run a job: every party of it, one command, with progress, a run store and resume.

``run_job("job.yaml")`` validates the job (nothing starts if it is invalid),
makes a run folder (:class:`atoll.jobs.store.RunFolder`, the filesystem run
store; layout in :mod:`atoll.jobs.store`), and launches every party with
:func:`atoll.federation.launch` — one OS process per party over loopback gRPC
with mutual TLS (certificates made on the fly), or threads over the in-process
transport for fast tests. Each party runs :func:`run_party`: the pipeline's
steps in DAG order (independent branches of a wave run at the same time, each
step on its own message scope), keeping only its own things in its part of
the store (:class:`atoll.jobs.store.PartyRun`).

A failing step stops the job: :class:`JobFailed` names the step, its component,
the party and the cause in one line. ``run_job(resume=RUN)`` starts again like
make: steps whose inputs did not change since they completed are kept (their
outputs loaded from the store), the others and everything downstream of them run
again (:mod:`atoll.jobs.resume`), and the report says which and why.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from atoll.errors import AtollError, ConfigError, DataError
from atoll.federation import Context, Party, PartyFailed, failure_summary, launch
from atoll.jobs import registry
from atoll.jobs.artifacts import Table
from atoll.jobs.component import Component, TaskContext, step_seed
from atoll.jobs.dag import ancestors, waves
from atoll.jobs.report import build_report
from atoll.jobs.resume import Fingerprint, ResumePlan, fingerprints, plan_resume
from atoll.jobs.spec import JobSpec, load_job, parse_job
from atoll.jobs.store import EventLog, PartyRun, RunFolder, RunStore, SavedOutputs, StepRecord, read_events
from atoll.jobs.views import alignment

__all__ = ["EventLog", "JobFailed", "Predictions", "RunResult", "SavedOutputs", "StepFailed", "party_main",
           "predict_job", "read_events", "run_job", "run_party"]

log = logging.getLogger(__name__)


class StepFailed(AtollError):
    """A step raised at one party."""

    def __init__(self, step: str, component: str, party: str, cause: str):
        self.step, self.component, self.party, self.cause = step, component, party, cause
        super().__init__(f"step {step!r} ({component}) on party {party!r}: {cause}")


class JobFailed(AtollError):
    """The job stopped; ``step``, ``component``, ``party``, ``cause`` and ``run_dir`` say where and why."""

    def __init__(self, step: str | None, component: str | None, party: str, cause: str, run_dir: Path):
        cause = " ".join(str(cause).split())  # one line, whatever the cause's own message looks like
        self.step, self.component, self.party, self.cause, self.run_dir = step, component, party, cause, run_dir
        where = f"step {step!r} ({component}) on party {party!r}" if step else f"party {party!r}"
        super().__init__(f"job failed at {where}: {cause} [run folder {run_dir}; "
                         f"fix the cause, then: atoll run --resume {run_dir}]")


# ====================================================================== party side
def _deps(job: JobSpec) -> dict[str, list[str]]:
    return {c.id: sorted({r.partition(".")[0] for r in c.inputs.values()}) for c in job.pipeline}


def _party_logger(run: PartyRun, processes: bool) -> tuple[logging.Logger, logging.Handler]:
    handler = run.log_handler()
    logger = logging.getLogger(f"atoll.job.{run.party}")
    logger.setLevel(logging.INFO)
    if processes:  # the whole process is this party: keep the algorithms' own logs too
        root = logging.getLogger()
        root.setLevel(logging.INFO)
        root.addHandler(handler)
    else:
        logger.addHandler(handler)
        logger.propagate = False
    return logger, handler


def party_main(ctx: Context, job_text: str, source: str, run_dir: str, skip: list[str],
               mode: str = "train", replay: list[str] | None = None, saved_dir: str | None = None,
               processes: bool = False) -> dict[str, Any]:
    """What every party process of ``atoll run`` runs: :func:`run_party` on the run folder."""
    job = parse_job(job_text, source, check_data=False)
    saved = RunFolder(saved_dir).party(ctx.party) if saved_dir else None
    return run_party(ctx, job, RunFolder(run_dir).party(ctx.party), skip, mode, replay, saved, processes)


def run_party(ctx: Context, job: JobSpec, run: PartyRun, skip: list[str], mode: str = "train",
              replay: list[str] | None = None, saved: PartyRun | None = None,
              processes: bool = False, before_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One party's part of a run: its part of each step, in DAG order, over ``ctx``.

    Steps in ``skip`` are not run: their outputs are read from ``run``. ``mode="infer"``
    (``atoll predict``): only the steps in ``replay`` run (their ``infer`` hook), reading
    fitted state from ``saved``; other steps' outputs are read from there. ``before_step(step)``
    is called as each step starts (a node checks its grants there); raising refuses the step.
    """
    party = ctx.party
    logger, handler = _party_logger(run, processes)
    saved = saved or run
    prints = fingerprints(job, party) if mode == "train" else {}
    outputs: dict[str, Mapping[str, Any]] = {}
    summary: dict[str, Any] = {}
    try:
        for wave in waves(_deps(job)):
            todo = []
            for step in wave:
                if mode == "infer" and step not in (replay or []):
                    outputs[step] = saved.outputs(step)
                elif step in skip:
                    outputs[step] = run.outputs(step)
                    run.event(party=party, step=step, component=job.component(step).component,
                              event="skipped", pid=os.getpid())
                else:
                    todo.append(step)
            if len(todo) == 1:
                outputs[todo[0]], summary[todo[0]] = _run_step(ctx, job, todo[0], outputs, run, saved,
                                                               logger, mode, prints.get(todo[0]),
                                                               before_step)
            elif todo:
                with ThreadPoolExecutor(len(todo), thread_name_prefix=f"atoll-{party}") as pool:
                    futs = {s: pool.submit(_run_step, ctx, job, s, outputs, run, saved, logger, mode,
                                           prints.get(s), before_step) for s in todo}
                    done, _ = wait(futs.values(), return_when=FIRST_EXCEPTION)
                    failed = [f.exception() for f in done if f.exception() is not None]
                    if failed:
                        # tell the peers now, so the sibling branches still waiting on them fail
                        # fast instead of holding this party until their timeout
                        ctx.transport.abort(failure_summary(failed[0]))
                        raise failed[0]
                    for s, fut in futs.items():
                        outputs[s], summary[s] = fut.result()
    finally:
        handler.close()
        logging.getLogger().removeHandler(handler)
        logger.removeHandler(handler)
    return {"party": party, "steps": summary}


def _run_step(ctx: Context, job: JobSpec, step: str, outputs: dict[str, Mapping[str, Any]], run: PartyRun,
              saved: PartyRun, logger: logging.Logger, mode: str, fingerprint: Fingerprint | None,
              before_step: Callable[[str], None] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = job.component(step)
    party = ctx.party
    cls = registry.get(spec.component)
    if before_step is not None:
        try:
            before_step(step)
        except AtollError as e:
            run.event(party=party, step=step, component=spec.component, event="failed",
                      cause=f"{type(e).__name__}: {e}", pid=os.getpid())
            raise StepFailed(step, spec.component, party, f"{type(e).__name__}: {e}") from e
    folder = run.begin_step(step)
    inputs = {}
    for slot, ref in spec.inputs.items():
        producer, _, name = ref.partition(".")
        inputs[slot] = outputs[producer].get(name)
    run.event(party=party, step=step, component=spec.component, event="start", pid=os.getpid())

    def progress(fraction: float, note: str = "") -> None:
        run.event(party=party, step=step, component=spec.component, event="progress",
                  fraction=float(fraction), note=note)

    tc = TaskContext(fed=ctx.for_task(step), party=party, role=ctx.role, step=step,
                     component=spec.component, job=job, dir=folder,
                     seed=step_seed(job.seed, step), log=logger.getChild(step), mode=mode,
                     progress_fn=progress)
    t0 = time.perf_counter()
    try:
        comp: Component = cls(spec.params)
        if mode == "infer":
            out = comp.infer(tc, inputs, saved.outputs(step))
        else:
            out = comp.run(tc, inputs)
        out = {k: v for k, v in (out or {}).items() if v is not None}
        unknown = set(out) - set(cls.outputs)
        if unknown:
            raise ConfigError(f"component {spec.component!r} returned undeclared outputs {sorted(unknown)}")
        for k, v in out.items():
            if (cls.outputs[k] == "data") != isinstance(v, Table):
                raise DataError(f"output {k!r} of {spec.component!r} should be {cls.outputs[k]}, "
                                f"got {type(v).__name__}")
        seconds = time.perf_counter() - t0
        run.complete_step(StepRecord(step, tuple(sorted(out)), seconds, mode,
                                     fingerprint.digest if fingerprint else None,
                                     fingerprint.parts if fingerprint else {}, time.time()), out)
    except BaseException as e:  # noqa: BLE001 - recorded, then re-raised with where it happened
        cause = f"{type(e).__name__}: {e}"
        if isinstance(e, StepFailed):
            cause = e.cause
        logger.error("step %s failed: %s", step, cause, exc_info=True)
        run.event(party=party, step=step, component=spec.component, event="failed", cause=cause,
                  pid=os.getpid())
        raise StepFailed(step, spec.component, party, cause) from e
    run.event(party=party, step=step, component=spec.component, event="done", seconds=seconds,
              pid=os.getpid())
    return out, {"seconds": seconds, "outputs": sorted(out)}


# ====================================================================== runner side
@dataclass
class RunResult:
    run_dir: Path
    report: dict[str, Any]
    seconds: float


def _new_run_dir(job: JobSpec, base: Path | None) -> Path:
    base = Path(base) if base else Path("runs")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    d = base / f"{job.name}-{stamp}-{uuid.uuid4().hex[:4]}"
    d.mkdir(parents=True)
    return d


def _diagnose(job: JobSpec, store: RunStore, e: PartyFailed, since: float) -> JobFailed:
    """Turn a launch failure into step + component + party + cause, from this launch's events.

    The root cause is, in order: the earliest step that failed on its own (not with
    ``PeerFailed`` because another party stopped); else a party that died in a step
    without reporting (killed, out of memory); else what the launcher reported.
    """
    run_dir = Path(str(store))
    cause = e.error if isinstance(e.error, str) else f"{type(e.error).__name__}: {e.error}"
    if cause.startswith("StepFailed: "):
        cause = cause[len("StepFailed: "):]
    evs = {p: [ev for ev in store.party(p).events()[0] if ev.get("t", 0) >= since] for p in job.parties}
    failed = sorted((ev for p in job.parties for ev in evs[p] if ev["event"] == "failed"), key=lambda ev: ev["t"])
    own = [ev for ev in failed if not str(ev.get("cause", "")).startswith("PeerFailed")]
    if own:
        ev = own[0]
        return JobFailed(ev["step"], ev["component"], ev["party"], ev.get("cause", cause), run_dir)

    def open_step(p: str) -> dict | None:
        started = {ev["step"]: ev for ev in evs[p] if ev["event"] == "start"}
        for ev in evs[p]:
            if ev["event"] in ("done", "failed"):
                started.pop(ev["step"], None)
        return list(started.values())[-1] if started else None

    silent = [p for p in job.parties if open_step(p) and not any(ev["event"] == "failed" for ev in evs[p])]
    if silent:
        party = e.party if e.party in silent else silent[0]
        ev = open_step(party)
        why = cause if party == e.party else "it stopped without reporting an error (its process died?)"
        return JobFailed(ev["step"], ev["component"], party, why, run_dir)
    mine = [ev for ev in failed if ev["party"] == e.party]
    if mine:
        return JobFailed(mine[0]["step"], mine[0]["component"], e.party, mine[0].get("cause", cause), run_dir)
    return JobFailed(None, None, e.party, cause, run_dir)


def _launch_all(job: JobSpec, store: RunFolder, mode: str, skip: list[str], display: bool,
                infer: dict[str, Any] | None = None) -> dict[str, Any]:
    from atoll.jobs.progress import Monitor

    processes = mode == "processes"
    kwargs = dict(job_text=job.text, source=job.source, run_dir=str(store.root), skip=skip,
                  processes=processes)
    if infer:
        kwargs.update(infer)
    parties = {p: Party(s.role, party_main, dict(kwargs)) for p, s in job.parties.items()}
    steps = [c.id for c in job.pipeline] if not infer else infer["replay"]
    monitor = Monitor(job, store, steps, enabled=display)
    monitor.start()
    since = time.time()
    try:
        job_id = f"{re.sub(r'[^A-Za-z0-9_.-]', '_', job.name)[:64]}-{uuid.uuid4().hex[:8]}"
        return launch(parties, mode=mode, timeout=job.timeout, job_id=job_id)
    except PartyFailed as e:
        raise _diagnose(job, store, e, since) from None
    finally:
        monitor.stop()


def run_job(job: JobSpec | str | Path | None = None, run_dir: str | Path | None = None,
            resume: str | Path | None = None, mode: str | None = None,
            centralized_baseline: bool = False, display: bool = False) -> RunResult:
    """Run a job file (or resume a run folder); return the run folder and the report.

    A resume reads the run's job file again (the user may have fixed it) and runs again
    every step whose inputs changed since it completed — data file contents, parameters,
    upstream outputs — or that did not complete, and everything downstream of those
    (:mod:`atoll.jobs.resume`); the report says which steps ran again and why.
    """
    t0 = time.perf_counter()
    plan: ResumePlan | None = None
    if resume is not None:
        store = RunFolder(resume)
        meta = store.meta()
        job = parse_job(store.job_text(), meta["source"])
        mode = mode or meta.get("mode") or job.mode
        centralized_baseline = centralized_baseline or meta.get("centralized_baseline", False)
        plan = plan_resume(job, store)
        skip = plan.keep
    else:
        if not isinstance(job, JobSpec):
            job = load_job(job)
        mode = mode or job.mode
        store = RunFolder(Path(run_dir) if run_dir else _new_run_dir(job, None))
        store.create(job.text, {
            "source": str(Path(job.source).resolve()) if job.source != "<job>" else "<job>",
            "mode": mode, "name": job.name, "seed": job.seed,
            "centralized_baseline": centralized_baseline})
        skip = []
    store.update_meta(status="running", started=time.time(), resumed_skip=skip,
                      resumed_rerun=plan.rerun if plan else {})
    try:
        _launch_all(job, store, mode, skip, display)
    except JobFailed as e:
        store.update_meta(status="failed", error=str(e), failed_step=e.step, failed_party=e.party)
        raise
    report = build_report(job, store, centralized_baseline=centralized_baseline, resume=plan,
                          seconds=time.perf_counter() - t0)
    store.update_meta(status="done", finished=time.time())
    return RunResult(store.root, report, time.perf_counter() - t0)


# ====================================================================== batch prediction
class Predictions(dict):
    """``{party: predictions.csv}``, with the prediction's run folder (``run_dir``) and its
    ``warnings`` (rows of a party's new data that had no match at the partners and were not
    scored: :func:`atoll.jobs.views.alignment`)."""

    def __init__(self, files: dict[str, Path], run_dir: Path, warnings: list[str]):
        super().__init__(files)
        self.run_dir, self.warnings = run_dir, warnings


def predict_job(run_dir: str | Path, out_dir: str | Path | None = None,
                data: dict[str, dict[str, Any]] | None = None, mode: str | None = None,
                display: bool = False) -> Predictions:
    """Apply a finished run's pipeline to (new) data: ``{party: predictions.csv}`` (a :class:`Predictions`).

    Each party loads only its own saved part (fitted scalers, model part) from
    ``run_dir/PARTY``; the steps on the data path of each ``predict`` step are
    replayed with their ``infer`` hook (reader, psi, split = pass-through, scale,
    predict, evaluate if labels are present). ``data`` replaces parties' data specs,
    e.g. ``{"guest": {"path": "new_guest.csv"}}``.
    """
    import yaml

    from atoll.jobs.components.reader import label_of

    trained = RunFolder(run_dir)
    meta = trained.meta()
    raw = yaml.safe_load(trained.job_text())
    original = parse_job(trained.job_text(), meta["source"], check_data=False)
    for party, spec in (data or {}).items():
        if party not in raw["parties"]:
            raise ConfigError(f"--data names party {party!r}, not in this job ({', '.join(raw['parties'])})")
        raw["parties"][party]["data"] = {**(raw["parties"][party].get("data") or {}), **spec}
        if "path" in spec:
            raw["parties"][party]["data"].pop("dataset", None)
            label = label_of(original, party)
            if label is not None:
                raw["parties"][party]["data"].setdefault("label", label)
    text = yaml.safe_dump(raw, sort_keys=False)
    job = parse_job(text, meta["source"], inference=True)
    deps = _deps(job)
    preds = [c for c in job.pipeline if c.component == "predict"]
    if not preds:
        raise ConfigError("this job has no predict step: nothing to apply to new data")
    replay: set[str] = set()
    for p in preds:
        data_step = p.inputs["data"].partition(".")[0]
        replay |= {data_step} | ancestors(deps, data_step) | {p.id}
    replay |= {c.id for c in job.pipeline if c.component == "evaluate"
               and c.inputs["scores"].partition(".")[0] in {p.id for p in preds}}
    for c in job.pipeline:  # monitoring steps (stability, scorecard) run again on the new rows, when they can
        if getattr(registry.get(c.component), "monitor", False) and all(
                ref.partition(".")[0] in replay or registry.get(job.component(ref.partition(".")[0]).component)
                .outputs.get(ref.partition(".")[2]) not in ("data", "scores") for ref in c.inputs.values()):
            replay.add(c.id)
    for sid in sorted(replay):
        cls = registry.get(job.component(sid).component)
        if cls.infer is Component.infer:
            raise ConfigError(f"step {sid!r} ({cls.name}) cannot be replayed on new data")
    for c in job.pipeline:
        if c.id not in replay and not all(trained.party(p).record(c.id) for p in job.parties):
            raise ConfigError(f"step {c.id!r} is not complete in {run_dir}; finish the run first "
                              f"(atoll run --resume {run_dir})")
    out = RunFolder(Path(out_dir) if out_dir else trained.root / f"predict-{time.strftime('%Y%m%d-%H%M%S')}")
    out.create(text, {"source": meta["source"], "mode": mode or meta.get("mode") or job.mode,
                      "name": job.name, "predicts": str(trained.root)})
    order = [c.id for c in job.pipeline if c.id in replay]
    _launch_all(job, out, mode or meta.get("mode") or job.mode, [], display,
                infer={"mode": "infer", "replay": order, "saved_dir": str(trained.root)})
    written: dict[str, Path] = {}
    for party in job.parties:
        for p in preds:
            saved = out.party(party).outputs(p.id)
            if "scores" in saved:
                written[party] = _write_predictions(saved["scores"], out.root / party / f"{p.id}.csv")
        for c in job.pipeline:  # scores of monitoring steps (a scorecard's points) beside the predictions
            if c.id in replay and getattr(registry.get(c.component), "monitor", False):
                saved = out.party(party).outputs(c.id)
                if "scores" in saved:
                    _write_predictions(saved["scores"], out.root / party / f"{c.id}.csv")
    warnings = [f"step {a['step']} (psi): {a['warning']}" for a in alignment(job, out) if a["warning"]]
    for w in warnings:
        log.warning("%s", w)
    return Predictions(written, out.root, warnings)


def _write_predictions(scores: dict[str, Any], path: Path) -> Path:
    import numpy as np
    import pandas as pd

    score = np.asarray(scores["score"])
    if score.ndim == 2:  # multiclass: the probability of each class and the most likely one
        df = pd.DataFrame({"id": np.asarray(scores["ids"]),
                           **{f"score_{k}": score[:, k] for k in range(score.shape[1])},
                           "predicted": np.argmax(score, axis=1)})
    else:
        df = pd.DataFrame({"id": np.asarray(scores["ids"]), "score": score})
    if scores.get("label") is not None:
        df["label"] = np.asarray(scores["label"])
    df.to_csv(path, index=False)
    return path
