"""Incremental indexing: discover files, extract only what is new or changed, write a new generation.

A run is five named steps on one :class:`BuildConfig`: plan (the folder against the old index and the
checkpoints of a killed run: what to reuse, what to extract), extract (the engine embeds the work and
checkpoints it), metadata (each image's header fields and the sidecar's columns, :mod:`imgsim.metadata`),
write (the vectors, previews and metadata of a new generation) and derive (the search method's data,
:mod:`imgsim.search`). A second run over the same folder reuses every unchanged vector (same size and mtime,
or same content hash), drops deleted files, and resumes from the checkpoints of a run that was killed part-way.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from imgsim import decode
from imgsim.discover import Discovery, ImageFile, discover
from imgsim.engines import make_engine
from imgsim.engines.base import Embedded, Engine, ExtractSettings, ModelFactory, Unchanged
from imgsim.errors import ImgsimError, Skipped
from imgsim.metadata.fields import BUILTIN
from imgsim.metadata.read import FileMetadata, count_problems, read_file_metadata
from imgsim.metadata.sidecar import Sidecar, read_sidecar
from imgsim.metadata.table import MetadataTable
from imgsim.models.base import DEFAULT_BACKBONE, BackboneSpec, default_dims
from imgsim.models.resnet50 import POOLINGS
from imgsim.models.weights import Weights, weights_spec
from imgsim.progress import ProgressFn, no_progress
from imgsim.search import choose_method, recorded_method, retune_asked, search_method
from imgsim.store import generations as store
from imgsim.store import metadata as stored


#: The step of ``BuildReport.timings`` that reading metadata (file headers, the sidecar) takes.
METADATA_STEP = "metadata (file headers, sidecar)"


@dataclass(frozen=True)
class BuildConfig:
    """How to index; ``None`` means the existing index's own setting, else the default."""

    #: ``resnet50`` or ``clip[:PRESET_OR_DIR]`` (default ``resnet50``).
    backbone: str | None = None
    #: ``imagenet``, ``random[:SEED]`` or a weights file (CLIP also ``pretrained``; default ``imagenet``).
    weights: str | None = None
    #: ``flatten`` (the reference) or ``avg`` for ResNet50; CLIP has its own.
    pooling: str | None = None
    #: Images per model call; ``None`` lets the engine pick one for the device.
    batch_size: int | None = None
    #: ResNet50's forward pass and arithmetic (:mod:`imgsim.models.runtime`); an index never mixes precisions.
    runtime: str | None = None
    precision: str | None = None
    #: ``exact`` or ``ann`` (default: the index's earlier explicit choice, else ``ann`` above 50,000 images).
    search: str | None = None
    #: recall@10 on queries not in the index that approximate search is tuned for (default: the index's
    #: recorded target, else 0.95, :data:`imgsim.search.RECALL_TARGET`).
    recall_target: float | None = None
    #: Extract every image again, into a fresh index; needed to change the settings above.
    rebuild: bool = False
    #: Build a ``flatten`` index estimated above 20 GB instead of refusing up front.
    allow_large: bool = False
    #: Vectors per checkpoint shard, from which a killed run resumes.
    checkpoint_every: int = 256
    #: A CSV or JSON Lines file keyed by ``path`` (relative to the folder) whose other columns join each image's
    #: metadata, replacing an earlier one's; without it, the columns an earlier run added are kept.
    metadata: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        if self.recall_target is not None and not 0 < self.recall_target <= 1:
            raise ImgsimError(f"--recall {self.recall_target} is not a recall: give a value above 0 and at most 1, "
                              "such as 0.95.")


@dataclass(frozen=True)
class SidecarReport:
    """What a run did with the ``--metadata`` file: the rows it used and what it could not use."""

    source: str
    columns: list[str]
    matched: int
    #: Sidecar paths that are not in the index (not found, or skipped): their rows are not used.
    unknown: list[str]
    #: Columns named like a built-in field: not used (rename them).
    clashes: list[str]
    #: Paths given more than once: the last row wins.
    duplicates: list[str]
    #: Rows without a path: not used.
    no_path: int


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
    #: Files whose metadata this run read, and how many had each problem (a broken EXIF block is a value of
    #: none, never a skipped image).
    metadata_read: int = 0
    metadata_problems: dict[str, int] = field(default_factory=dict)
    sidecar: SidecarReport | None = None

    @property
    def images_per_second(self) -> float:
        return self.extracted / self.extract_seconds if self.extract_seconds > 0 else 0.0


def _checkpoint_key(spec: Weights, pooling: str, backbone: str = DEFAULT_BACKBONE) -> str:
    key = f"{backbone}|{pooling}|{spec.mode}|{spec.seed}|{spec.path}"
    if spec.path and os.path.exists(spec.path):
        st = os.stat(spec.path)
        key += f"|{st.st_size}|{st.st_mtime_ns}"
    return key


@dataclass
class _Plan:
    """A run's starting point: the folder as found, the old index, the settled settings and the work to do."""

    index_dir: Path
    found: Discovery
    old: store.Index | None
    backbone: BackboneSpec
    weights: Weights
    pooling: str
    precision: str
    ckpt_key: str
    report: BuildReport
    #: rel -> (entry, the old row it keeps or its new vector)
    rows: dict[str, tuple[store.Entry, object]]
    skipped: list[Skipped]
    work: list[ImageFile]
    old_by_path: dict[str, int]
    #: What the model that made the vectors records: its weights (resolved), preset and vector length.
    resolved: dict | None
    preset: str | None
    dims: int | None
    thumbs: dict[str, bytes] = field(default_factory=dict)
    #: rel -> the metadata of a file extracted in this run, read while its bytes are fresh in the page cache.
    file_metadata: dict[str, FileMetadata] = field(default_factory=dict)
    metadata_seconds: float = 0.0
    sidecar: Sidecar | None = None


def build_index(src_dir: str | os.PathLike, index_dir: str | os.PathLike, config: BuildConfig | None = None, *,
                progress: ProgressFn | None = None, engine: Engine | None = None,
                model_factory: ModelFactory | None = None, **settings) -> BuildReport:
    """Index ``src_dir`` into ``index_dir`` incrementally with ``config``; returns what was done.

    ``settings`` are :class:`BuildConfig` fields that replace the config's (``build_index(src, ix,
    weights="random")``). ``engine`` runs the extraction (default: this process, extracting with
    ``model_factory``'s model when one is given; see :func:`imgsim.engines.make_engine`).
    """
    config = replace(config or BuildConfig(), **settings)
    started = time.perf_counter()
    clock = _Clock()
    progress = progress or no_progress
    index_dir = Path(index_dir).expanduser()
    sidecar = read_sidecar(config.metadata) if config.metadata is not None else None  # refused before any work
    with store.locked(index_dir):
        plan = _plan(src_dir, index_dir, config, progress, clock)
        plan.sidecar = sidecar
        if plan.work:
            _extract(plan, engine or make_engine(model_factory=model_factory), config, progress, clock)
        _settle(plan)
        table, old_table = _metadata(plan)
        clock.lap(METADATA_STEP)
        old, report = plan.old, plan.report
        method = choose_method(config.search, old.meta if old else None, len(plan.rows))
        same_vectors = old is not None and old.paths == sorted(plan.rows) and all(
            isinstance(plan.rows[p][1], int) and plan.rows[p][1] == i for i, p in enumerate(old.paths))
        same_method = old is not None and recorded_method(old.meta) == method[0]
        # A new recall target re-tunes the search through its update (the vectors and their cells stay).
        keep = same_vectors and same_method and not retune_asked(old.meta, config.recall_target)
        if keep and _nothing_else_changed(plan, method) and table.equals(old_table):
            store.clear_checkpoints(index_dir)
            report.seconds = time.perf_counter() - started
            clock.lap("write")
            return report
        _write(index_dir, plan.rows, plan.skipped, _meta(plan), plan.dims or default_dims(plan.backbone, plan.pooling),
               old if keep else None, old, progress, plan.thumbs, plan.found.root, clock, method,
               config.recall_target, table)
        store.clear_checkpoints(index_dir)
        clock.lap("write")
        report.committed = True
        report.seconds = time.perf_counter() - started
        return report


def _plan(src_dir: str | os.PathLike, index_dir: Path, config: BuildConfig, progress: ProgressFn,
          clock: _Clock) -> _Plan:
    """The plan step: scan the folder, settle the settings against the old index, and sort the files into
    unchanged, resumed from the checkpoints of a killed run, skipped as before, and work to extract."""
    progress("scan", 0, None)
    found = discover(src_dir, exclude=(index_dir,))
    progress("scan", len(found.files), len(found.files))
    old = store.load_index(index_dir) if store.index_exists(index_dir) and not config.rebuild else None
    if old is not None and old.root != found.root:
        raise ImgsimError(f"The index at {index_dir} was built from {old.root}, not {found.root}. "
                          "Use another --index folder, or --rebuild to replace it.")
    bspec = _backbone_spec(config.backbone, old, index_dir)
    pooling = bspec.check_pooling(config.pooling or (old.pooling if old else bspec.default_pooling()))
    spec = bspec.parse_weights(config.weights or (weights_spec(old.weights) if old else None))
    if old is not None:
        _check_same_settings(old, spec, pooling, index_dir)
    precision = _precision(config.precision, old, index_dir)
    if not config.allow_large:
        check_storage(len(found.files), pooling)

    report = BuildReport(index_dir=index_dir, root=found.root, pooling=pooling, ignored=found.ignored,
                         timings=clock.timings)
    clock.lap("scan and read the old index")
    # A rebuild keeps its own checkpoints apart, so a killed --rebuild resumes its work (and only its work).
    ckpt_key = (_checkpoint_key(spec, pooling, bspec.spec) + ("|rebuild" if config.rebuild else "")
                + ("|float16" if precision == "float16" else ""))
    resumable = store.read_checkpoints(index_dir, ckpt_key)
    old_by_path = {e.path: i for i, e in enumerate(old.entries)} if old else {}
    old_skips = {s.path: s for s in old.skipped} if old else {}

    rows: dict[str, tuple[store.Entry, object]] = {}
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
    return _Plan(index_dir, found, old, bspec, spec, pooling, precision, ckpt_key, report, rows, skipped, work,
                 old_by_path, resolved=old.meta["weights"] if old else None,
                 preset=old.meta.get("preset") if old else bspec.preset, dims=old.dims if old else None)


def _extract(plan: _Plan, engine: Engine, config: BuildConfig, progress: ProgressFn, clock: _Clock) -> None:
    """The extract step: start the engine, check what it extracts with against the index, then embed the work."""
    old, report, index_dir = plan.old, plan.report, plan.index_dir
    # Only ResNet50 with ImageNet weights may download anything; other models just load.
    stage = plan.backbone.capabilities.pretrained_load_stage if plan.weights.mode == "imagenet" else "model_load"
    progress(stage, 0, None)
    report.engine = engine.name
    ready = engine.start(ExtractSettings(plan.weights, plan.pooling, config.batch_size, config.runtime,
                                         plan.precision, plan.backbone))
    try:  # the engine is closed on every way out, a refused setting included
        for step, seconds in ready.timings.items():
            clock.add(step, seconds)
        clock.lap("model (other)", min_seconds=0.05)
        plan.preset, plan.dims = ready.preset, ready.dims
        if ready.pooling != plan.pooling:
            raise ImgsimError(f"The model extracts {ready.pooling} features but this index uses {plan.pooling}.")
        if ready.precision != plan.precision:
            if old is None:
                plan.precision = ready.precision  # record what the model really computed in, not what was asked
            elif len(plan.backbone.capabilities.precisions) > 1:  # e.g. a cached float32 model, a float16 index
                raise ImgsimError(
                    f"The model computes in {ready.precision} but the index at {index_dir} holds {plan.precision} "
                    f"vectors, and the two are never mixed. Update it with `python -m imgsim index SRC_DIR "
                    f"--index {index_dir} --precision {plan.precision}`, or add --rebuild to re-extract every image.")
        recorded = old.weights.get("identity") if old is not None else None
        if recorded is not None and ready.weights.identity != recorded:
            raise ImgsimError(f"The weights now at {plan.weights.path or plan.weights.mode} differ from those that "
                              f"built the index at {index_dir}. Re-run with --rebuild to re-extract every image.")
        plan.resolved = ready.weights.to_json()
        store.write_checkpoint_settings(index_dir, plan.ckpt_key,
                                        {"weights": plan.resolved, "preset": plan.preset, "dims": plan.dims})
        report.device = ready.device
        report.runtime = ready.runtime
        _embed(engine, plan, config.checkpoint_every, progress)
        clock.add(METADATA_STEP, plan.metadata_seconds)  # read between model calls: not the model's time
    finally:
        engine.close()
    clock.lap("extraction")


def _embed(engine: Engine, plan: _Plan, checkpoint_every: int, progress: ProgressFn) -> None:
    """Turn the work into rows (or skips), writing checkpoint shards of ``checkpoint_every`` new vectors."""
    old, old_by_path, report = plan.old, plan.old_by_path, plan.report
    known = {f.rel: old.entries[old_by_path[f.rel]].sha256 for f in plan.work if f.rel in old_by_path}
    pending_entries: list[store.Entry] = []
    pending_vectors: list[np.ndarray] = []
    done = 0
    t0 = time.perf_counter()
    progress("extract", 0, len(plan.work))
    for f, outcome in engine.extract(plan.work, known):
        row = old_by_path.get(f.rel)
        if isinstance(outcome, ImgsimError):
            reason = getattr(outcome, "reason", None)
            if reason is None:
                raise outcome
            plan.skipped.append(Skipped(f.rel, reason, getattr(outcome, "detail", ""), f.size, f.mtime_ns))
        elif isinstance(outcome, Unchanged):
            plan.rows[f.rel] = (store.Entry(f.rel, f.size, f.mtime_ns, outcome.sha256), row)
            report.unchanged += 1
        elif isinstance(outcome, Embedded):
            entry = store.Entry(f.rel, f.size, f.mtime_ns, outcome.sha256)
            plan.thumbs[f.rel] = outcome.thumb
            started = time.perf_counter()
            plan.file_metadata[f.rel] = read_file_metadata(f.path, rel=f.rel)
            plan.metadata_seconds += time.perf_counter() - started
            plan.rows[f.rel] = (entry, outcome.vector)
            pending_entries.append(entry)
            pending_vectors.append(outcome.vector)
            report.extracted += 1
            if row is None:
                report.added += 1
            else:
                report.changed += 1
            if len(pending_entries) >= checkpoint_every:
                store.write_checkpoint(plan.index_dir, plan.ckpt_key, pending_entries, np.stack(pending_vectors))
                pending_entries, pending_vectors = [], []
        done += 1
        progress("extract", done, len(plan.work))
    report.extract_seconds = time.perf_counter() - t0
    if pending_entries:
        store.write_checkpoint(plan.index_dir, plan.ckpt_key, pending_entries, np.stack(pending_vectors))


def _settle(plan: _Plan) -> None:
    """After extraction: what the model recorded (from the checkpoints when it ran earlier) and the report."""
    report = plan.report
    if plan.resolved is None and report.resumed:
        # Every image came from checkpoints (a run killed after extracting): the model that made them
        # recorded its weights identity, label and shape; the index must record the same.
        recorded = store.read_checkpoint_settings(plan.index_dir, plan.ckpt_key)
        if recorded is not None:
            plan.resolved, plan.preset, plan.dims = recorded["weights"], recorded.get("preset"), recorded.get("dims")
    report.weights_label = (plan.resolved or {}).get("label") or plan.weights.mode
    report.removed = len(set(plan.old_by_path) - set(plan.rows)) if plan.old else 0
    plan.skipped.sort(key=lambda s: s.path)
    report.skipped = plan.skipped
    report.indexed = len(plan.rows)


def _metadata(plan: _Plan) -> tuple[MetadataTable, MetadataTable | None]:
    """The metadata step: the new table (row i = image i in path order) and the old one (None when the old index
    has none). A kept row keeps its metadata; any other is read from its file (header only: no pixel decoded),
    a changed file keeping its sidecar values; then the sidecar given to this run replaces the sidecar columns."""
    old = stored.load_metadata(plan.old) if plan.old is not None else None
    order = sorted(plan.rows)
    sources: list[int | dict] = []
    read: list[FileMetadata] = []
    changed: dict[int, int] = {}  # position in sources -> the old row of a changed file
    for rel in order:
        source = plan.rows[rel][1]
        if old is not None and isinstance(source, (int, np.integer)):
            sources.append(int(source))
            continue
        found = plan.file_metadata.get(rel) or read_file_metadata(plan.found.root / rel, rel=rel)
        read.append(found)
        sources.append(dict(found.values))
        if old is not None and rel in plan.old_by_path:
            changed[len(sources) - 1] = plan.old_by_path[rel]
    if changed:
        for position, values in zip(changed, old.rows(list(changed.values()))):
            sources[position].update({n: v for n, v in values.items() if n not in BUILTIN})
    table = MetadataTable.assemble(sources, old)
    plan.report.metadata_read = len(read)
    plan.report.metadata_problems = count_problems(read)
    sidecar = plan.sidecar
    if sidecar is not None:
        table, unknown = table.with_sidecar(sidecar, order)
        plan.report.sidecar = SidecarReport(sidecar.source, list(sidecar.kinds), len(sidecar.rows) - len(unknown),
                                            unknown, list(sidecar.clashes), list(sidecar.duplicates), sidecar.no_path)
    return table, old


def _nothing_else_changed(plan: _Plan, method: tuple[str, str]) -> bool:
    """With the same vectors and search method: whether entries, skips and the search choice are as recorded.

    An explicit --search is remembered: an unchanged index that recorded "auto" is rewritten to say so.
    """
    old = plan.old
    return (all(plan.rows[e.path][0] == e for e in old.entries)
            and (old.meta.get("search") or {}).get("chosen", "auto") == method[1]
            and [s.to_json() for s in old.skipped] == [s.to_json() for s in plan.skipped])


def _meta(plan: _Plan) -> dict:
    """The new generation's metadata, before the search method adds its own (:func:`derive`)."""
    old, weights = plan.old, plan.weights
    resolved = plan.resolved
    if resolved is None:  # an empty collection: nothing was ever extracted
        resolved = {"mode": weights.mode, "identity": None, "label": weights.mode, "path": weights.path,
                    "seed": weights.seed}
    meta = {"backbone": plan.backbone.name, "weights": resolved, "pooling": plan.pooling, "root": str(plan.found.root),
            "created": old.meta["created"] if old else store.now_iso(), "updated": store.now_iso(),
            "ignored": plan.found.ignored, "graph_k": None, "precision": plan.precision,
            # what the extraction really ran on (e.g. "openvino … (CPU, bfloat16)" for --precision float16)
            "runtime": plan.report.runtime or (old.meta.get("runtime") if old else None),
            "metadata": {"sidecar": plan.sidecar.source if plan.sidecar is not None else
                         ((old.meta.get("metadata") or {}).get("sidecar") if old else None)}}
    if plan.backbone.capabilities.default_preset is not None:
        meta["preset"] = plan.preset or default_preset(plan.backbone)
    return meta


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


def _write(index_dir: Path, rows: dict, skipped: list[Skipped], meta: dict, dims: int,
           same_vectors_as: store.Index | None, old: store.Index | None, progress: ProgressFn,
           thumbs: dict[str, bytes], root: Path, clock: _Clock | None = None,
           method: tuple[str, str] = ("exact", "auto"), recall_target: float | None = None,
           table: MetadataTable | None = None) -> None:
    """The write step: vectors (old rows copied, new ones written), previews and the metadata ``table`` (with its
    keyword index) of a new generation, then its derived data (kept from ``same_vectors_as`` when the vectors are
    the same, else :func:`derive`d)."""
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
        if table is not None:
            meta["metadata"] = {**(meta.get("metadata") or {}), **stored.save_metadata(writer, table)}
        if same_vectors_as is not None:
            for name in same_vectors_as.meta.get("arrays", []):
                if not name.startswith("thumb_"):
                    writer.save_array(name, same_vectors_as.array(name))
            kept = same_vectors_as.directory / same_vectors_as.generation
            for name in search_method(method[0]).files:
                writer.save_file(name, functools.partial(shutil.copyfile, kept / name))
            meta.update({k: same_vectors_as.meta.get(k) for k in ("projection", "map", "graph_k", "search")})
            meta["search"] = dict(meta["search"] or {"method": "exact"}, chosen=method[1])
        else:
            if clock is not None:
                clock.lap("write")
            meta.update(derive(writer, progress, method, old, sources, recall_target))
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


def derive(writer: store.GenerationWriter, progress: ProgressFn, method: tuple[str, str],
           old: store.Index | None = None, sources: list | None = None, recall_target: float | None = None) -> dict:
    """The derive step: the search method's data for the vectors being written (``method``: name and how it
    was chosen), updated from the previous generation ``old`` where the method can (``sources[i]``: the old row
    that new row ``i`` keeps, else its new vector), tuned for ``recall_target`` where it approximates."""
    name, chosen = method
    if old is not None and sources is not None:
        return search_method(name).update(writer, progress, chosen, old, sources, recall_target)
    return search_method(name).derive(writer, progress, chosen, recall_target)


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
