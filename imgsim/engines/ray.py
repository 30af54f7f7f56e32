"""Ray Data engine: extraction as a batch-inference job over one machine or a cluster.

The files come from imgsim's own discovery (so the same skips and reasons); Ray Data decodes them in CPU
tasks and embeds them in an actor pool that holds one model per actor (one GPU per actor on GPU nodes).
Outcomes stream back to the driver, which writes them as checkpoint shards and assembles the same versioned
index as the local engine: incremental and resumable exactly like it (``build.py`` holds that logic).
Every node must be able to read the images at the same path, and the weights file when one is given.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from imgsim.discover import ImageFile
from imgsim.engines.base import Embedded, ExtractSettings, Outcome, Started, Unchanged, decode_file
from imgsim.errors import ImgsimError, SkipReason
from imgsim.models.base import Backbone, BackboneSpec, make_backbone
from imgsim.models.embedding import default_batch_size
from imgsim.models.weights import ResolvedWeights, Weights

INSTALL_HINT = "python -m pip install -r requirements-ray.txt   (that is: pip install 'ray[data]>=2.40,<3')"
_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])  # the imgsim package, shipped to Ray workers
_BLANK = np.zeros((224, 224, 3), dtype=np.uint8)


def import_ray() -> Any:
    """Import Ray (with Ray Data), or say how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the engine needs Ray Data, not only Ray core
    except ImportError as exc:
        raise ImgsimError(f"--engine ray needs Ray Data, which is not installed here ({exc}). Install it with:\n"
                          f"  {INSTALL_HINT}\nor run without --engine ray (the local engine).") from None
    return ray


def _decode_row(row: dict[str, Any], resample: str) -> dict[str, Any]:
    """Ray task: one file to the model's input (squashed with the backbone's ``resample`` filter), or to a typed
    skip / "unchanged" (failures are values)."""
    f = ImageFile(row["rel"], Path(row["path"]), int(row["size"]), int(row["mtime_ns"]))
    out = {"rel": row["rel"], "status": "ok", "sha256": "", "thumb": b"", "reason": "", "detail": "",
           "pixels": _BLANK}
    try:
        got = decode_file(f, row["known"] or None, resample)
    except ImgsimError as exc:
        reason = getattr(exc, "reason", None)
        if reason is None:
            raise
        out.update(status="skipped", reason=reason.value, detail=getattr(exc, "detail", ""))
        return out
    if isinstance(got, Unchanged):
        out.update(status="unchanged", sha256=got.sha256)
    else:
        sha, thumb, pixels = got
        out.update(sha256=sha, thumb=thumb, pixels=pixels)
    return out


def _build(spec: BackboneSpec, weights: Weights, pooling: str, batch_size: int | None, runtime: str | None,
           precision: str | None) -> tuple[Backbone | None, str]:
    """The backbone's model, or ``(None, message)``: a failure on a worker is kept as a value and sent back, as
    raised Ray would only show the driver an ActorDiedError (or RayTaskError) traceback instead of the message
    that says what to do."""
    try:
        return make_backbone(spec, weights, pooling, batch_size, runtime=runtime, precision=precision), ""
    except ImgsimError as exc:
        return None, str(exc)


def _resolve(spec: BackboneSpec, weights: Weights, pooling: str, runtime: str | None,
             precision: str | None) -> tuple[ResolvedWeights | None, str | None, str]:
    """Ray task: ``(weights, preset, "")`` as a worker resolves them for this backbone (by building its model
    once), or ``(None, None, message)``: the driver builds no model, and only a backbone knows how its weights
    resolve."""
    model, error = _build(spec, weights, pooling, 1, runtime, precision)
    return (None, None, error) if model is None else (model.weights, getattr(model, "preset", None), "")


class _Embedder:
    """Ray actor: one model per actor, built once; embeds the decoded rows of each batch."""

    def __init__(self, spec: BackboneSpec, weights: Weights, pooling: str, batch_size: int, identity: str,
                 runtime: str | None, precision: str | None):
        self.dims = spec.capabilities.poolings[pooling]
        self.extractor, self.error = _build(spec, weights, pooling, batch_size, runtime, precision)
        if self.extractor is not None and self.extractor.weights.identity != identity:
            self.extractor, self.error = None, (
                f"The weights on this Ray node ({self.extractor.weights.identity}) differ from the driver's "
                f"({identity}): every node must read the same weights file.")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray(batch["status"]) == "ok"
        vectors = np.zeros((len(ok), self.dims), dtype=np.float32)
        if self.extractor is None:
            out = {k: v for k, v in batch.items() if k != "pixels"}
            out.update(status=np.full(len(ok), "error", dtype=object),
                       detail=np.full(len(ok), self.error, dtype=object), vector=vectors)
            return out
        if ok.any():
            vectors[ok] = self.extractor.embed(np.stack(list(batch["pixels"][ok])))
        out = {k: v for k, v in batch.items() if k != "pixels"}
        out["vector"] = vectors
        return out


class RayEngine:
    """Extraction as a Ray Data job: decoding in CPU tasks, an actor pool with one model per actor."""

    name = "ray"
    #: Runs on a Ray cluster named by an address (see :func:`imgsim.engines.make_engine`).
    cluster = True

    def __init__(self, address: str | None = None, actors: int | None = None, actor_cpus: float | None = None,
                 ship_code: bool = True, num_cpus: int | None = None):
        """``address``: a running cluster's (``auto``, ``ray://host:10001``...); none starts a local instance.

        ``actors``/``actor_cpus`` default to one actor per GPU, or on CPU-only clusters to actors of up to
        4 CPUs that leave CPUs free for decoding. ``ship_code`` sends this imgsim package to the workers of a
        Ray instance that this engine starts (a host that started Ray itself passes ``runtime_env`` there);
        ``num_cpus`` sizes a local instance. Without Ray installed this says how to install it, before any work.
        """
        import_ray()
        self.num_cpus = num_cpus
        self.address = address
        self.actors = actors
        self.actor_cpus = actor_cpus
        self.ship_code = ship_code
        self._settings: ExtractSettings | None = None
        self._started_ray = False

    def start(self, settings: ExtractSettings) -> Started:
        t0 = time.perf_counter()
        ray = import_ray()
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            try:
                # The package travels with the job, so workers need no imgsim install (only its dependencies).
                env = {"py_modules": [_PACKAGE_DIR]} if self.ship_code else None
                ray.init(address=self.address, num_cpus=None if self.address else self.num_cpus,
                         include_dashboard=False, log_to_driver=False, logging_level="ERROR", runtime_env=env)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                what = f"connect to the Ray cluster at {self.address}" if self.address else "start a local Ray instance"
                raise ImgsimError(f"Could not {what}: {exc}") from None
            self._started_ray = True
        t1 = time.perf_counter()
        weights, preset, error = ray.get(ray.remote(_resolve).options(num_cpus=0.5).remote(
            settings.backbone, settings.weights, settings.pooling, settings.runtime, settings.precision))
        if weights is None:
            raise ImgsimError(error)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        device = "GPU" if gpus else "CPU"
        batch_size = settings.batch_size or default_batch_size(device, settings.precision or "float32")
        self._settings = ExtractSettings(settings.weights, settings.pooling, batch_size, settings.runtime,
                                         settings.precision, settings.backbone)
        self._identity = weights.identity
        self._gpus = gpus
        self._cpus = float(resources.get("CPU", 1))
        where = f"{self._cpus:g} CPU" + (f", {gpus} GPU" if gpus else "")
        capabilities = settings.backbone.capabilities
        return Started(weights, settings.pooling, f"{device} (Ray: {where})", batch_size,
                       f"Ray Data actors ({settings.runtime or 'auto'} runtime)" if capabilities.runtimes
                       else "Ray Data actors", settings.precision or "float32",
                       {"start Ray": t1 - t0, "resolve weights": time.perf_counter() - t1},
                       capabilities.poolings[settings.pooling], preset)

    def _pool(self) -> tuple[int, float, float]:
        """(actors, CPUs per actor, GPUs per actor) for this cluster."""
        if self._gpus:
            actors = self.actors or self._gpus
            return actors, self.actor_cpus or min(1.0, max(0.1, (self._cpus - 0.5) / actors)), 1.0
        # Decode tasks need half a CPU beside the actors: on a 1-CPU cluster a whole-CPU actor left none, and
        # the job waited for ever.
        cpus = self.actor_cpus or max(0.5, min(4.0, self._cpus - 1))
        return self.actors or max(1, int((self._cpus - 1) // cpus)), cpus, 0.0

    def extract(self, work: list[ImageFile], known_sha256: dict[str, str]) -> Iterator[tuple[ImageFile, Outcome]]:
        if self._settings is None:
            raise RuntimeError("RayEngine.extract() before start()")
        if not work:
            return
        ray = import_ray()
        from imgsim.decode import DecodeError

        logging.getLogger("ray.data").setLevel(logging.ERROR)
        ray.data.DataContext.get_current().enable_progress_bars = False  # imgsim reports progress itself

        s = self._settings
        by_rel = {f.rel: f for f in work}
        items = [{"rel": f.rel, "path": str(f.path), "size": f.size, "mtime_ns": f.mtime_ns,
                  "known": known_sha256.get(f.rel, "")} for f in work]
        actors, actor_cpus, actor_gpus = self._pool()
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4 * int(self._cpus))))
        # Half a CPU per decode task: unlike the actors' resources, so Ray Data keeps decoding in its own
        # CPU tasks instead of fusing it into the model actors (which would leave a GPU waiting on JPEGs).
        ds = ds.map(_decode_row, num_cpus=0.5, fn_kwargs={"resample": s.resample})
        ds = ds.map_batches(_Embedder, batch_size=s.batch_size, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=actor_cpus,
                            num_gpus=actor_gpus or None,
                            fn_constructor_kwargs={"spec": s.backbone, "weights": s.weights, "pooling": s.pooling,
                                                   "batch_size": s.batch_size, "identity": self._identity,
                                                   "runtime": s.runtime, "precision": s.precision})
        dims = s.backbone.capabilities.poolings[s.pooling]
        for batch in ds.iter_batches(batch_size=s.batch_size, batch_format="numpy"):
            for i, rel in enumerate(batch["rel"]):
                f = by_rel[str(rel)]
                status = str(batch["status"][i])
                if status == "error":  # the model could not be built on a worker: nothing can be extracted
                    raise ImgsimError(str(batch["detail"][i]))
                if status == "skipped":
                    yield f, DecodeError(SkipReason(str(batch["reason"][i])), str(batch["detail"][i]))
                elif status == "unchanged":
                    yield f, Unchanged(str(batch["sha256"][i]))
                else:
                    vector = np.asarray(batch["vector"][i], dtype=np.float32).reshape(dims)
                    yield f, Embedded(str(batch["sha256"][i]), bytes(batch["thumb"][i]), vector.copy())

    def close(self) -> None:
        if self._started_ray:
            import_ray().shutdown()
            self._started_ray = False
