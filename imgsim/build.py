"""Incremental indexing: discover files, extract only what is new or changed, write a new generation.

A second run over the same folder reuses every unchanged vector (same size and mtime, or same content
hash), drops deleted files, and resumes from the checkpoints of a run that was killed part-way.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from imgsim import decode
from imgsim.search import ann_build
from imgsim.store import generations as store
from imgsim.models.base import DEFAULT_BACKBONE, Backbone, BackboneSpec, default_dims, make_backbone
from imgsim.discover import ImageFile, discover
from imgsim.errors import ImgsimError, Skipped
from imgsim.engines.base import Embedded, Engine, ExtractSettings, LocalEngine, Unchanged
from imgsim.models.resnet50 import POOLINGS, ResNet50Backbone
from imgsim.models.weights import Weights, weights_spec
from imgsim.analysis.map2d import MapBuilder
from imgsim.progress import ProgressFn, no_progress
from imgsim.search.projection import PCAProjection
from imgsim.search.exact import ExactSearch

#: Neighbours stored per image: enough for the duplicate histogram and the quality check.
GRAPH_K = 10
PROJECTION_COMPONENTS = 256


@dataclass
class BuildReport:
    """What an indexing run did."""

    index_dir: Path
    root: Path
    indexed: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    resumed: int = 0
    extracted: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    ignored: int = 0
    committed: bool = False
    extract_seconds: float = 0.0
    seconds: float = 0.0
    weights_label: str = ""
    pooling: str = ""
    device: str = ""
    engine: str = "local"
    runtime: str = ""
    #: Seconds per step of the whole run (scan, model, extraction, derived data, write), in order.
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.extracted / self.extract_seconds if self.extract_seconds > 0 else 0.0


def _checkpoint_key(spec: Weights, pooling: str, backbone: str = DEFAULT_BACKBONE) -> str:
    key = f"{backbone}|{pooling}|{spec.mode}|{spec.seed}|{spec.path}"
    if spec.path and os.path.exists(spec.path):
        st = os.stat(spec.path)
        key += f"|{st.st_size}|{st.st_mtime_ns}"
    return key


def build_index(src_dir: str | os.PathLike, index_dir: str | os.PathLike, *, weights: str | None = None,
                pooling: str | None = None, batch_size: int | None = None, rebuild: bool = False,
                progress: ProgressFn | None = None, checkpoint_every: int = 256, workers: int | None = None,
                extractor_factory: Callable[[Weights, str, int], Backbone] | None = None,
                backbone: str | None = None, model_factory: Callable[[Weights, str, int], object] | None = None,
                engine: Engine | None = None, runtime: str | None = None,
                precision: str | None = None, search: str | None = None, allow_large: bool = False) -> BuildReport:
    """Index ``src_dir`` into ``index_dir`` incrementally; returns what was done.

    ``backbone`` (``resnet50``, ``clip[:PRESET_OR_DIR]``), ``weights`` and ``pooling`` default to those of
    the existing index (else ``resnet50``, ``imagenet`` and ``flatten``); asking for different ones than
    the index was built with is refused unless ``rebuild`` is set. ``extractor_factory`` builds the ResNet50
    model, ``model_factory`` any other backbone's. ``engine`` runs the extraction (default: this process, see
    :mod:`imgsim.engines.base`); ``batch_size=None`` lets it pick one for the device; ``runtime`` and ``precision``
    choose ResNet50's forward pass (:mod:`imgsim.models.runtime`). ``search`` is ``exact`` or ``ann`` (default: the
    index's earlier explicit choice, else ``ann`` above 50,000 images). A ``flatten`` index estimated above
    20 GB is refused up front unless ``allow_large``.
    """
    started = time.perf_counter()
    clock = _Clock()
    progress = progress or no_progress
    index_dir = Path(index_dir).expanduser()
    with store.locked(index_dir):
        progress("scan", 0, None)
        found = discover(src_dir, exclude=(index_dir,))
        progress("scan", len(found.files), len(found.files))
        old = store.load_index(index_dir) if store.index_exists(index_dir) and not rebuild else None
        if old is not None and old.root != found.root:
            raise ImgsimError(f"The index at {index_dir} was built from {old.root}, not {found.root}. "
                              "Use another --index folder, or --rebuild to replace it.")
        bspec = _backbone_spec(backbone, old, index_dir)
        pooling = bspec.check_pooling(pooling or (old.pooling if old else bspec.default_pooling()))
        spec = bspec.parse_weights(weights or (weights_spec(old.weights) if old else None))
        if old is not None:
            _check_same_settings(old, spec, pooling, index_dir)
        precision = _precision(precision, old, index_dir)
        if not allow_large:
            check_storage(len(found.files), pooling)

        report = BuildReport(index_dir=index_dir, root=found.root, pooling=pooling, ignored=found.ignored,
                             timings=clock.timings)
        clock.lap("scan and read the old index")
        # A rebuild keeps its own checkpoints apart, so a killed --rebuild resumes its work (and only its work).
        ckpt_key = (_checkpoint_key(spec, pooling, bspec.spec) + ("|rebuild" if rebuild else "")
                    + ("|float16" if precision == "float16" else ""))
        resumable = store.read_checkpoints(index_dir, ckpt_key)
        old_by_path = {e.path: i for i, e in enumerate(old.entries)} if old else {}
        old_skips = {s.path: s for s in old.skipped} if old else {}

        rows: dict[str, tuple[store.Entry, object]] = {}  # rel -> (entry, old row index or vector)
        skipped: list[Skipped] = list(found.skipped)
        work: list[ImageFile] = []
        for f in found.files:
            row = old_by_path.get(f.rel)
            if row is not None and (old.entries[row].size, old.entries[row].mtime_ns) == (f.size, f.mtime_ns):
                rows[f.rel] = (old.entries[row], row)
                report.unchanged += 1
            elif (f.rel, f.size, f.mtime_ns) in resumable:
                rows[f.rel] = resumable[(f.rel, f.size, f.mtime_ns)]
                report.resumed += 1
            elif f.rel in old_skips and (old_skips[f.rel].size, old_skips[f.rel].mtime_ns) == (f.size, f.mtime_ns):
                skipped.append(old_skips[f.rel])
            else:
                work.append(f)

        resolved = old.meta["weights"] if old else None
        preset = old.meta.get("preset") if old else bspec.preset
        dims = old.dims if old else None
        thumbs: dict[str, bytes] = {}
        if work:
            # Only ResNet50 with ImageNet weights may download anything; other models just load.
            progress(bspec.capabilities.pretrained_load_stage if spec.mode == "imagenet" else "model_load", 0, None)
            if bspec.backbone_class is ResNet50Backbone:  # the one model the engines build themselves
                factory = extractor_factory  # None: the engine builds ResNet50Backbone with runtime/precision
            else:
                if engine is not None and engine.name != "local":
                    raise ImgsimError(f"--engine {engine.name} runs the resnet50 backbone only; index {bspec.spec} "
                                      "with the local engine.")
                factory = model_factory or (lambda w, p, b: make_backbone(bspec, w, p, b or 16, runtime=runtime,
                                                                          precision=precision))
            engine = engine or LocalEngine(factory, workers)
            report.engine = engine.name
            ready = engine.start(ExtractSettings(spec, pooling, batch_size, runtime, precision))
            try:  # the engine is closed on every way out, a refused setting included
                for step, seconds in ready.timings.items():
                    clock.add(step, seconds)
                clock.lap("model (other)", min_seconds=0.05)
                preset, dims = ready.preset, ready.dims
                if ready.pooling != pooling:
                    raise ImgsimError(f"The model extracts {ready.pooling} features but this index uses {pooling}.")
                if ready.precision != precision:
                    if old is None:
                        precision = ready.precision  # record what the model really computed in, not what was asked
                    elif len(bspec.capabilities.precisions) > 1:  # e.g. a cached float32 model, a float16 index
                        raise ImgsimError(
                            f"The model computes in {ready.precision} but the index at {index_dir} holds {precision} "
                            f"vectors, and the two are never mixed. Update it with `python -m imgsim index SRC_DIR "
                            f"--index {index_dir} --precision {precision}`, or add --rebuild to re-extract every image.")
                recorded = old.weights.get("identity") if old is not None else None
                if recorded is not None and ready.weights.identity != recorded:
                    raise ImgsimError(f"The weights now at {spec.path or spec.mode} differ from those that built the index "
                                      f"at {index_dir}. Re-run with --rebuild to re-extract every image.")
                resolved = ready.weights.to_json()
                store.write_checkpoint_settings(index_dir, ckpt_key, {"weights": resolved, "preset": preset, "dims": dims})
                report.device = ready.device
                report.runtime = ready.runtime
                _extract(engine, work, old, old_by_path, rows, skipped, report, index_dir, ckpt_key,
                         checkpoint_every, progress, thumbs)
            finally:
                engine.close()
            clock.lap("extraction")
        if resolved is None and report.resumed:
            # Every image came from checkpoints (a run killed after extracting): the model that made them
            # recorded its weights identity, label and shape; the index must record the same.
            recorded = store.read_checkpoint_settings(index_dir, ckpt_key)
            if recorded is not None:
                resolved, preset, dims = recorded["weights"], recorded.get("preset"), recorded.get("dims")
        report.weights_label = (resolved or {}).get("label") or spec.mode
        report.removed = len(set(old_by_path) - set(rows)) if old else 0
        skipped.sort(key=lambda s: s.path)
        report.skipped = skipped
        report.indexed = len(rows)

        method = ann_build.choose_method(search, old.meta if old else None, len(rows))
        same_vectors = old is not None and old.paths == sorted(rows) and all(
            isinstance(rows[p][1], int) and rows[p][1] == i for i, p in enumerate(old.paths))
        unchanged = same_vectors and all(rows[e.path][0] == e for e in old.entries)
        same_method = old is not None and ann_build.is_ann(old.meta) == (method[0] == "ann")
        # An explicit --search is remembered: an unchanged index that recorded "auto" is rewritten to say so.
        same_choice = old is not None and (old.meta.get("search") or {}).get("chosen", "auto") == method[1]
        if (unchanged and same_method and same_choice
                and [s.to_json() for s in old.skipped] == [s.to_json() for s in skipped]):
            store.clear_checkpoints(index_dir)
            report.seconds = time.perf_counter() - started
            clock.lap("write")
            return report
        if resolved is None:  # an empty collection: nothing was ever extracted
            resolved = {"mode": spec.mode, "identity": None, "label": spec.mode, "path": spec.path, "seed": spec.seed}
        meta = {"backbone": bspec.name, "weights": resolved, "pooling": pooling, "root": str(found.root),
                "created": old.meta["created"] if old else store.now_iso(), "updated": store.now_iso(),
                "ignored": found.ignored, "graph_k": None, "precision": precision}
        if bspec.capabilities.default_preset is not None:
            meta["preset"] = preset or default_preset(bspec)
        _write(index_dir, rows, skipped, meta, dims or default_dims(bspec, pooling), old if same_vectors and same_method else None,
               old, progress, thumbs, found.root, clock, method)
        store.clear_checkpoints(index_dir)
        clock.lap("write")
        report.committed = True
        report.seconds = time.perf_counter() - started
        return report


def _precision(asked: str | None, old: store.Index | None, index_dir: Path) -> str:
    """The precision to extract with: the one asked for, else the index's own (float32 for older indexes).

    float16 and float32 vectors differ slightly, so one index never mixes them.
    """
    recorded = (old.meta.get("precision") or "float32") if old is not None else None
    if asked is None:
        return recorded or "float32"
    if recorded is not None and asked != recorded:
        raise ImgsimError(f"The index at {index_dir} was built with --precision {recorded} (asked: {asked}); the "
                          f"vectors of the two cannot be mixed. Re-run with --precision {recorded}, or add --rebuild "
                          "to re-extract every image.")
    return asked


class _Clock:
    """Adds up where a build's time goes: ``lap(step)`` books the time since the previous lap to ``step``."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def add(self, step: str, seconds: float) -> None:
        self.timings[step] = self.timings.get(step, 0.0) + seconds
        self._last += seconds

    def lap(self, step: str, min_seconds: float = 0.0) -> None:
        now = time.perf_counter()
        if now - self._last >= min_seconds:
            self.add(step, max(0.0, now - self._last))
        self._last = now


def _backbone_spec(asked: str | None, old: store.Index | None, index_dir: Path) -> BackboneSpec:
    """The backbone to use: the one asked for, else the index's own; a different one needs --rebuild."""
    recorded = BackboneSpec.from_meta(old.meta) if old is not None else None
    if asked is None:
        return recorded or BackboneSpec.parse(None)
    spec = BackboneSpec.parse(asked)
    if recorded is not None and (spec.name != recorded.name or (
            spec.preset and recorded.preset and _same_preset(spec.preset) != recorded.preset)):
        raise ImgsimError(f"The index at {index_dir} was built with the {recorded.spec} backbone (asked: {spec.spec}). "
                          "Vectors of two models cannot be compared: use another --index folder, or add --rebuild "
                          "to re-extract every image with the new backbone.")
    return recorded if recorded is not None and recorded.name == spec.name and not spec.preset else spec


def _same_preset(preset: str) -> str:
    """A preset as an index records it (local folders as absolute paths)."""
    from imgsim.models.clip import is_local_preset

    return str(Path(preset).expanduser().resolve()) if is_local_preset(preset) else preset


def default_preset(spec: BackboneSpec) -> str:
    from imgsim.models.clip import DEFAULT_PRESET

    return _same_preset(spec.preset) if spec.preset else DEFAULT_PRESET


def _check_same_settings(old: store.Index, spec: Weights, pooling: str, index_dir: Path) -> None:
    """Refuse to mix settings in one index; real weights (ImageNet or a file) are compared by hash later."""
    problems = []
    if pooling != old.pooling:
        problems.append(f"pooling {old.pooling} (asked: {pooling})")
    w = old.weights
    if spec.is_random != (w["mode"] == "random") or (spec.is_random and spec.seed != w["seed"]):
        asked = f"random:{spec.seed}" if spec.is_random else spec.mode
        problems.append(f"weights {w['label']} (asked: {asked})")
    if problems:
        raise ImgsimError(f"The index at {index_dir} was built with {' and '.join(problems)}. Re-run with the same "
                          "settings, or add --rebuild to re-extract every image with the new ones.")


def _extract(engine: Engine, work: list[ImageFile], old: store.Index | None, old_by_path: dict,
             rows: dict, skipped: list[Skipped], report: BuildReport, index_dir: Path, ckpt_key: str,
             checkpoint_every: int, progress: ProgressFn, thumbs: dict[str, bytes]) -> None:
    known = {f.rel: old.entries[old_by_path[f.rel]].sha256 for f in work if f.rel in old_by_path}
    pending_entries: list[store.Entry] = []
    pending_vectors: list[np.ndarray] = []
    done = 0
    t0 = time.perf_counter()
    progress("extract", 0, len(work))
    for f, outcome in engine.extract(work, known):
        row = old_by_path.get(f.rel)
        if isinstance(outcome, ImgsimError):
            reason = getattr(outcome, "reason", None)
            if reason is None:
                raise outcome
            skipped.append(Skipped(f.rel, reason, getattr(outcome, "detail", ""), f.size, f.mtime_ns))
        elif isinstance(outcome, Unchanged):
            rows[f.rel] = (store.Entry(f.rel, f.size, f.mtime_ns, outcome.sha256), row)
            report.unchanged += 1
        elif isinstance(outcome, Embedded):
            entry = store.Entry(f.rel, f.size, f.mtime_ns, outcome.sha256)
            thumbs[f.rel] = outcome.thumb
            rows[f.rel] = (entry, outcome.vector)
            pending_entries.append(entry)
            pending_vectors.append(outcome.vector)
            report.extracted += 1
            if row is None:
                report.added += 1
            else:
                report.changed += 1
            if len(pending_entries) >= checkpoint_every:
                store.write_checkpoint(index_dir, ckpt_key, pending_entries, np.stack(pending_vectors))
                pending_entries, pending_vectors = [], []
        done += 1
        progress("extract", done, len(work))
    report.extract_seconds = time.perf_counter() - t0
    if pending_entries:
        store.write_checkpoint(index_dir, ckpt_key, pending_entries, np.stack(pending_vectors))


def _write(index_dir: Path, rows: dict, skipped: list[Skipped], meta: dict, dims: int,
           same_vectors_as: store.Index | None, old: store.Index | None, progress: ProgressFn,
           thumbs: dict[str, bytes], root: Path, clock: _Clock | None = None,
           method: tuple[str, str] = ("exact", "auto")) -> None:
    order = sorted(rows)
    entries = [rows[p][0] for p in order]
    writer = store.GenerationWriter(index_dir, len(order), dims)
    try:
        progress("save", 0, len(order))
        sources = [rows[p][1] for p in order]
        writer.copy_rows(old.vectors if old is not None else None,
                         [(i, s) for i, s in enumerate(sources) if isinstance(s, (int, np.integer))])
        for i, s in enumerate(sources):
            if not isinstance(s, (int, np.integer)):
                writer.vectors[i] = s
        progress("save", len(order), len(order))
        blob, offsets = store.pack_blobs(_thumbnails(order, sources, thumbs, old, root))
        writer.save_array("thumb_blob", blob)
        writer.save_array("thumb_offsets", offsets)
        if same_vectors_as is not None:
            for name in same_vectors_as.meta.get("arrays", []):
                if not name.startswith("thumb_"):
                    writer.save_array(name, same_vectors_as.array(name))
            if ann_build.is_ann(same_vectors_as.meta):
                old_ann = same_vectors_as.directory / same_vectors_as.generation / ann_build.ANN_FILE
                writer.save_file(ann_build.ANN_FILE, lambda path: shutil.copyfile(old_ann, path))
            meta.update({k: same_vectors_as.meta.get(k) for k in ("projection", "map", "graph_k", "search")})
            meta["search"] = dict(meta["search"] or {"method": "exact"}, chosen=method[1])
        else:
            if clock is not None:
                clock.lap("write")
            meta.update(derive_for(writer, progress, method, old, sources))
            if clock is not None:
                clock.lap("derived data (projection, neighbour graph, map)")
        writer.commit(meta, entries, skipped)
    except BaseException:
        writer.abort()
        raise


def _thumbnails(order: list[str], sources: list, fresh: dict[str, bytes], old: store.Index | None,
                root: Path) -> list[bytes]:
    """A small JPEG per row: made while extracting, kept from the old index, or (rows resumed from a
    checkpoint) decoded again; an unreadable file gets an empty preview rather than failing the run."""
    old_has = old is not None and old.has_array("thumb_blob")
    if old_has:
        blob, offsets = old.array("thumb_blob"), old.array("thumb_offsets")
    out = []
    for rel, source in zip(order, sources):
        if rel in fresh:
            out.append(fresh[rel])
        elif old_has and isinstance(source, int):
            out.append(store.unpack_blob(blob, offsets, source))
        else:
            try:
                out.append(decode.small_jpeg(decode.open_rgb(decode.read_bytes(root / rel))))
            except decode.DecodeError:
                out.append(b"")
    return out


def derive_for(writer: store.GenerationWriter, progress: ProgressFn, method: tuple[str, str],
               old: store.Index | None = None, sources: list | None = None) -> dict:
    """Derived data for the vectors being written, by the search method chosen: ANN (updating the previous
    generation's ANN index when it has one) or exact (the reference pipeline, re-derived in full)."""
    name, chosen = method
    if name == "ann" and writer.count == 0:
        # faiss cannot train cells on no vectors: an empty collection keeps the exact arrays and remembers the ask.
        return dict(derive_arrays(writer, progress), search={"method": "exact", "chosen": chosen, "asked": "ann"})
    if name == "ann":
        if sources is not None and ann_build.can_update(old, writer.dims):
            return ann_build.update_ann(writer, progress, old, sources, chosen, GRAPH_K)
        return ann_build.derive_ann(writer, progress, chosen, GRAPH_K)
    return dict(derive_arrays(writer, progress), search={"method": "exact", "chosen": chosen})


#: Above this estimated size a flatten index is refused until the user confirms (``--allow-large``).
FLATTEN_LIMIT_BYTES = 20 * 10**9


def estimate_bytes(count: int, pooling: str) -> int:
    """Index bytes for ``count`` images: float32 vectors plus about 3 KiB per image of previews and derived data."""
    return count * (POOLINGS.get(pooling, 2048) * 4 + 3 * 1024)


def check_storage(count: int, pooling: str) -> None:
    """Refuse, before any work, a flatten index that would exceed 20 GB, with the estimate and the way out."""
    size = estimate_bytes(count, pooling)
    if pooling == "flatten" and size > FLATTEN_LIMIT_BYTES:
        raise ImgsimError(
            f"Indexing {count:,} images with --pooling flatten would need about {size / 1e9:,.0f} GB "
            f"({POOLINGS[pooling] * 4 / 1024:,.0f} KiB per image). With --pooling avg it would be about "
            f"{estimate_bytes(count, 'avg') / 1e9:,.1f} GB. Choose --pooling avg, or add --allow-large to "
            "index in flatten mode anyway.")


def derive_arrays(writer: store.GenerationWriter, progress: ProgressFn) -> dict:
    """Fit the search projection, the neighbour graph and the 2-D map for the vectors being written."""
    vectors = writer.vectors
    n = len(vectors)
    progress("compress", 0, None)
    projection = PCAProjection(n_components=PROJECTION_COMPONENTS).fit(vectors)
    projected, residual = projection.transform(vectors)
    search = ExactSearch().fit(vectors, projection, projected, residual)
    for name, arr in (("pca_components", projection.components_), ("pca_mean", projection.mean_),
                      ("projected", projected), ("residual", residual), ("sqnorm", search.sqnorm_)):
        writer.save_array(name, arr)
    progress("neighbors", 0, n)
    graph = search.kneighbors_rows(np.arange(n), GRAPH_K)
    writer.save_array("nn_indices", graph.indices.astype(np.int32))
    writer.save_array("nn_distances", graph.distances.astype(np.float32))
    progress("neighbors", n, n)
    progress("map", 0, None)
    mapper = MapBuilder().fit(projected)
    writer.save_array("map_xy", mapper.embedding_)
    progress("map", 1, 1)
    return {
        "projection": {"n_components": projection.n_components_,
                       "explained_variance": float(np.sum(projection.explained_variance_ratio_))},
        "map": {"method": "pca+tsne", "pca_components": mapper.n_components_, "perplexity": mapper.perplexity_},
        "graph_k": int(graph.indices.shape[1]),
    }
