"""Server-side jobs: one indexing run per index folder, owned by the process, not by a browser tab.

A job runs in a background thread; any number of viewers read the same :class:`JobSnapshot` (stage,
count, rate) while it runs, and its result or its error afterwards. A closed tab or a reload does not
stop or restart it; starting a job whose key is already running attaches to the running one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from imgsim.progress import ProgressFn, describe, fraction

RUNNING, DONE, FAILED = "running", "done", "failed"


@dataclass(frozen=True)
class JobSnapshot:
    """What one job is doing or did; immutable, so viewers never see a half-updated state."""

    key: str
    number: int
    state: str
    started: float
    stage: str = "scan"
    done: int = 0
    total: int | None = None
    stage_started: float = 0.0
    finished: float | None = None
    result: Any = None
    error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    @property
    def fraction(self) -> float:
        return fraction(self.done, self.total)

    def describe(self, now: float | None = None) -> str:
        """One progress line: stage, count, rate and time left."""
        now = time.time() if now is None else now
        return describe(self.stage, self.done, self.total, max(0.0, now - self.stage_started))


class JobRegistry:
    """Jobs by key (an index folder); at most one runs per key at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, JobSnapshot] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._count = 0

    def get(self, key: str) -> JobSnapshot | None:
        """The latest job for ``key`` (running or finished), or None."""
        with self._lock:
            return self._jobs.get(key)

    def start(self, key: str, work: Callable[[ProgressFn], Any]) -> JobSnapshot:
        """Run ``work(progress)`` in the background unless a job for ``key`` is already running; returns it."""
        with self._lock:
            current = self._jobs.get(key)
            if current is not None and current.running:
                return current
            self._count += 1
            now = time.time()
            snap = JobSnapshot(key, self._count, RUNNING, now, stage_started=now)
            self._jobs[key] = snap
            thread = threading.Thread(target=self._run, args=(key, snap.number, work), daemon=True,
                                      name=f"imgsim-job-{snap.number}")
            self._threads[key] = thread
        thread.start()
        return snap

    def wait(self, key: str, timeout: float | None = None) -> JobSnapshot | None:
        """Block until the job for ``key`` has finished (for tests and the CLI); returns its snapshot."""
        with self._lock:
            thread = self._threads.get(key)
        if thread is not None:
            thread.join(timeout)
        return self.get(key)

    def forget(self, key: str) -> None:
        """Drop a finished job's result (a running job is kept)."""
        with self._lock:
            if key in self._jobs and not self._jobs[key].running:
                del self._jobs[key]

    def _update(self, key: str, number: int, **changes: Any) -> None:
        with self._lock:
            snap = self._jobs.get(key)
            if snap is not None and snap.number == number:
                self._jobs[key] = replace(snap, **changes)

    def _run(self, key: str, number: int, work: Callable[[ProgressFn], Any]) -> None:
        def progress(stage: str, done: int, total: int | None) -> None:
            with self._lock:
                snap = self._jobs[key]
                now = time.time()
                stage_started = snap.stage_started if stage == snap.stage else now
                self._jobs[key] = replace(snap, stage=stage, done=done, total=total, stage_started=stage_started)

        try:
            result = work(progress)
        except BaseException as exc:  # the failure becomes the job's value; every viewer shows it
            self._update(key, number, state=FAILED, error=exc, finished=time.time())
        else:
            self._update(key, number, state=DONE, result=result, finished=time.time())
