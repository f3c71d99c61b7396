"""Jobs: YAML pipelines of components, run at every party with one command.

    from atoll.jobs import load_job, run_job, predict_job
    result = run_job("examples/credit_scoring_hetero_lr.yaml", centralized_baseline=True)
    result.report["evaluations"]

See :mod:`atoll.jobs.spec` (the file format), :mod:`atoll.jobs.component`
(writing a component), :mod:`atoll.jobs.runner` (running, predict),
:mod:`atoll.jobs.store` (the run store and its run folder), :mod:`atoll.jobs.resume`
(what a resume runs again, and why).
"""

from atoll.jobs.artifacts import Table
from atoll.jobs.component import Component, NoParams, Slot, TaskContext
from atoll.jobs.registry import register
from atoll.jobs.runner import JobFailed, RunResult, StepFailed, predict_job, run_job
from atoll.jobs.spec import JobSpec, JobSpecError, load_job, parse_job
from atoll.jobs.store import PartyRun, RunFolder, RunStore, StepRecord

__all__ = ["Component", "JobFailed", "JobSpec", "JobSpecError", "NoParams", "PartyRun", "RunFolder",
           "RunResult", "RunStore", "Slot", "StepFailed", "StepRecord", "Table", "TaskContext", "load_job",
           "parse_job", "predict_job", "register", "run_job"]
