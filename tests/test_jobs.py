"""Server-side jobs: one run per key, shared progress, errors kept as values."""

from __future__ import annotations

import threading

from imgsim.errors import ImgsimError
from imgsim.serving.jobs import DONE, FAILED, JobRegistry


def test_one_job_per_key_and_a_second_start_attaches():
    registry, release, calls = JobRegistry(), threading.Event(), []

    def work(progress):
        calls.append(1)
        progress("extract", 3, 10)
        release.wait(10)
        return "report"

    first = registry.start("idx", work)
    second = registry.start("idx", work)
    assert second.number == first.number and second.running
    for _ in range(100):
        snap = registry.get("idx")
        if snap.done == 3:
            break
        threading.Event().wait(0.01)
    assert (snap.stage, snap.done, snap.total) == ("extract", 3, 10)
    assert snap.fraction == 0.3 and snap.describe().startswith("Extracting features: 3 / 10")
    release.set()
    done = registry.wait("idx", 10)
    assert done.state == DONE and done.result == "report" and calls == [1]
    other = registry.start("other", lambda progress: 1)  # keys are independent
    assert other.number != first.number and registry.wait("other", 10).result == 1


def test_a_failure_is_the_jobs_value_and_a_new_start_runs_again():
    registry = JobRegistry()

    def fail(progress):
        raise ImgsimError("Another imgsim run is writing the index; wait for it to finish.")

    registry.start("idx", fail)
    snap = registry.wait("idx", 10)
    assert snap.state == FAILED and isinstance(snap.error, ImgsimError) and snap.finished is not None
    again = registry.start("idx", lambda progress: "ok")
    assert again.number > snap.number and registry.wait("idx", 10).result == "ok"
    registry.forget("idx")
    assert registry.get("idx") is None
