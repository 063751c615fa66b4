"""Background conversion jobs: a queue, worker threads, and the state the frontend polls.

TensorBoard serves requests from its own threads; a conversion takes seconds to minutes, so it runs here and
the HTTP layer only submits and reads. A model with a queued or running job refuses a second one (409).

The conversions themselves run in a warm child process (`tb_unfreeze.worker`): the runner starts it, through
`warm_up`, the first time the tab asks about jobs (the model list shows each model's job), i.e. when the tab is first
opened, not when TensorBoard starts; by the first click on Convert, TensorFlow is already imported.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable

from tensorboard import errors

from tb_unfreeze.contract import ConversionRequest
from tb_unfreeze.errors import BusyError, UserError

logger = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
ACTIVE = (QUEUED, RUNNING)


@dataclasses.dataclass
class Job:
    """One conversion request and where it got to."""

    id: str
    model: str
    request: ConversionRequest
    client: dict  # address and user agent, for the history
    state: str = QUEUED
    fraction: float = 0.0
    step: str = "queued"
    error: str | None = None
    result: dict | None = None
    created: float = dataclasses.field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "model": self.model,
            "state": self.state,
            "progress": {"fraction": round(self.fraction, 4), "step": self.step},
            "error": self.error,
            "result": self.result,
            "request": self.request.to_json(),
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }


# run(job, progress) -> result summary; progress(step, fraction) updates the job.
RunFn = Callable[[Job, Callable[[str, float], None]], dict]


def _start_conversion_worker() -> None:
    from tb_unfreeze.worker import warm_up  # noqa: PLC0415 (no TensorFlow here: it starts a child that imports it)

    warm_up()


class JobRunner:
    """Runs jobs with `run` on `workers` daemon threads (started on first submit); keeps the last `keep` jobs.

    `warm_up` (default: start the warm conversion worker) is called once, on the first `active`, `list` or `submit`
    (the first /models, /jobs or /convert request); None turns it off."""

    def __init__(
        self,
        run: RunFn,
        workers: int = 1,
        keep: int = 200,
        warm_up: Callable[[], None] | None = _start_conversion_worker,
    ) -> None:
        self._run = run
        self._warm_up = warm_up
        self._workers = workers
        self._keep = keep
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._threads: list[threading.Thread] = []

    def warm(self) -> None:
        """Get the conversion worker ready (once; cheap: it only starts a child process)."""
        warm_up, self._warm_up = self._warm_up, None
        if warm_up is not None:
            try:
                warm_up()
            except Exception:  # a conversion will start its own worker; the listing must not fail
                logger.exception("unfreeze: starting the conversion worker failed")

    def submit(self, model_id: str, request: ConversionRequest, client: dict | None = None) -> Job:
        """Queue a conversion; BusyError (409) if this model already has one queued or running."""
        self.warm()
        with self._lock:
            busy = self._active_locked(model_id)
            if busy is not None:
                raise BusyError(
                    f"{model_id} is already being converted (job {busy.id}, {busy.state}); wait for it to finish."
                )
            job = Job(id=uuid.uuid4().hex[:12], model=model_id, request=request, client=client or {})
            self._jobs[job.id] = job
            self._trim_locked()
            if not self._threads:
                for i in range(self._workers):
                    t = threading.Thread(target=self._work, name=f"unfreeze-convert-{i}", daemon=True)
                    t.start()
                    self._threads.append(t)
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise errors.NotFoundError(f"no job {job_id!r} on this TensorBoard (jobs are kept until it restarts).")
        return job

    def list(self) -> list[Job]:
        """All kept jobs, newest first."""
        self.warm()
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)

    def active(self, model_id: str) -> Job | None:
        self.warm()  # the model list asks this for every model: the tab is open
        with self._lock:
            return self._active_locked(model_id)

    def wait(self, job_id: str, timeout: float) -> Job:
        """Block until the job is finished or `timeout` passes (for tests and scripts)."""
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        while job.state in ACTIVE and time.monotonic() < deadline:
            time.sleep(0.05)
        return job

    def _active_locked(self, model_id: str) -> Job | None:
        return next((j for j in self._jobs.values() if j.model == model_id and j.state in ACTIVE), None)

    def _trim_locked(self) -> None:
        finished = sorted((j for j in self._jobs.values() if j.state not in ACTIVE), key=lambda j: j.created)
        for job in finished[: max(0, len(self._jobs) - self._keep)]:
            del self._jobs[job.id]

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._execute(job)

    def _execute(self, job: Job) -> None:
        def progress(step: str, fraction: float) -> None:
            job.step, job.fraction = str(step), min(1.0, max(job.fraction, float(fraction)))

        job.state, job.started, job.step = RUNNING, time.time(), "starting"
        try:
            result = self._run(job, progress)
        except UserError as e:
            job.error = str(e)
        except errors.PublicError as e:
            job.error = str(e)
        except Exception:  # a bug: keep TensorBoard alive and say where to look
            logger.exception("unfreeze: conversion job %s of %s failed", job.id, job.model)
            job.error = f"internal error while converting {job.model}; the TensorBoard log has the details."
        else:
            job.result, job.fraction, job.step = result, 1.0, "done"
        job.finished = time.time()
        job.state = FAILED if job.error else DONE

    def stop(self) -> None:
        """Let the workers exit after the jobs already queued."""
        for _ in self._threads:
            self._queue.put(None)
