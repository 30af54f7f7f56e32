"""Server-side jobs: one run per key, shared progress, errors kept as values."""

from __future__ import annotations

import threading

import numpy as np

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


def test_every_stage_of_a_build_reaches_the_registry_and_moves(photo_dir, extractor_factory, tmp_path,
                                                                 monkeypatch):
    from imgsim.build import build_index
    from imgsim.search import exact
    from imgsim.store.generations import load_index

    monkeypatch.setattr(exact, "GRAPH_BLOCK", 5)  # 12 images: the neighbour graph in three blocks
    registry, seen, key = JobRegistry(), [], str(tmp_path / "ix")

    def work(progress):
        def spy(stage, done, total):
            progress(stage, done, total)
            snap = registry.get(key)
            seen.append((snap.stage, snap.done, snap.total))

        return build_index(photo_dir, key, weights="random", progress=spy, model_factory=extractor_factory)

    registry.start(key, work)
    assert registry.wait(key, 300).state == DONE
    by_stage = {}
    for stage, done, total in seen:
        by_stage.setdefault(stage, []).append((done, total))
    assert [d for d, _ in by_stage["compress"]] == [0, 1, 2, 3] and by_stage["compress"][-1][1] == 3
    assert by_stage["neighbors"] == [(0, 12), (5, 12), (10, 12), (12, 12)]
    assert by_stage["extract"][-1] == (13, 13)  # the broken file too and by_stage["map"][-1] == (1, 1)
    # t-SNE reports its iterations: the map's bar moves from 0 to the end, never back
    map_done = [d for d, _ in by_stage["map"]]
    assert {t for _, t in by_stage["map"]} == {1000} and map_done[0] == 0 and map_done[-1] == 1000
    assert map_done == sorted(map_done) and len(set(map_done)) >= 4
    # the graph built in blocks is the graph of one call over every row
    index = load_index(key)
    whole = exact.ExactMethod().open(index).kneighbors_rows(np.arange(12), index.meta["graph_k"])
    assert np.array_equal(index.array("nn_indices"), whole.indices)
    assert np.allclose(index.array("nn_distances"), whole.distances, atol=1e-6)


def test_a_stage_without_a_count_shows_its_time_so_the_line_moves():
    from imgsim.progress import describe

    assert describe("compress", 0, None, 0.2) == "Fitting search projection…"
    assert describe("map", 0, None, 75.0) == "Building 2-D map (t-SNE)… 1 min 15 s"


def test_a_loaded_model_is_out_of_sight_of_the_collections_streamlit_runs_after_every_rerun(monkeypatch):
    """Streamlit collects all garbage twice after each script or fragment run; with TensorFlow and a model in
    the heap each collection walked ~470,000 objects (0.26 s of CPU), every second of an indexing job."""
    import gc

    from dashboard import cached

    model = [{"layer": i} for i in range(50_000)]  # a model's many small objects
    monkeypatch.setattr(cached.base, "make_backbone", lambda *a, **k: model)
    cached.load_model.clear()
    try:
        assert cached.load_model("resnet50", "random:77", "avg") is model
        walked = {id(o) for o in gc.get_objects()}  # what a collection now traverses
        assert id(model) not in walked and not any(id(layer) in walked for layer in model[::1000])
        garbage = [[]]
        garbage[0].append(garbage)  # a cycle made after the model is still collected
        del garbage
        assert gc.collect() > 0
    finally:
        gc.unfreeze()
        cached.load_model.clear()


def test_a_model_the_cache_evicted_is_freed_at_the_next_load(monkeypatch):
    """Frozen objects are never collected: a fifth model spec evicted the first from the four-entry cache, and
    that model (reference cycles, hundreds of MB) would have stayed in memory for the life of the server."""
    import gc
    import weakref

    from dashboard import cached

    class Model:
        def __init__(self):
            self.me = self  # a model's reference cycles: only a collection frees it

    made = []

    def make(*a, **k):
        made.append(Model())
        return made[-1]

    monkeypatch.setattr(cached.base, "make_backbone", make)
    cached.load_model.clear()
    try:
        for seed in range(5):
            cached.load_model("resnet50", f"random:{seed}", "avg")
        alive = [weakref.ref(m) for m in made]
        made.clear()
        cached.load_model("resnet50", "random:5", "avg")  # evicts another; this load's collection frees the first
        assert [r() is None for r in alive[:1]] == [True]
        assert all(r() is not None for r in alive[2:])  # the ones still cached stay
    finally:
        gc.unfreeze()
        cached.load_model.clear()
