"""The operations the HTTP API and the MCP server offer on one collection, with the same limits for both.

Each answer is the CLI's ``--json`` for the same inputs (:mod:`imgsim.service.results`); the transports only
parse requests and map :class:`~imgsim.errors.ImgsimError` to statuses (:func:`status_of`). The model is built
on the first request that needs it (an upload, a changed file, a text query) and used by one request at a time;
so is a whole-collection computation (duplicates, new clusters). A request that would wait longer than
``Limits.busy_wait_s`` for either is refused with a 503 and ``Retry-After`` rather than queued without bound.
"""

from __future__ import annotations

import dataclasses
import io
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from imgsim import decode
from imgsim.analysis.duplicates import duplicate_scan
from imgsim.collection import Collection, QueryResult
from imgsim.errors import ImgsimError, SkipReason
from imgsim.metadata.fusion import DEFAULT_WEIGHTS
from imgsim.metadata.filters import Filter, parse_where
from imgsim.models.base import Backbone
from imgsim.models.weights import WeightsError
from imgsim.service.limits import (ApiError, Limits, check_distance, check_examples, check_k, check_range, inside,
                                   one_line, quoted, relative_path, unit_vector)
from imgsim.service.results import (clusters_json, dedup_json, examples_json, explain_json, filter_fields, info_dict,
                                    metadata_info, query_json, text_json)

#: A deduplicated search looks this much deeper than k (at most ``Limits.max_dedup_depth``), so that dropping
#: near-copies still leaves k results.
DEDUP_DEPTH = 4
#: Cluster models kept per server (k-means on every request would cost seconds on a large collection).
CLUSTER_CACHE = 8


@dataclass(frozen=True)
class SearchQuery:
    """One search: exactly one of ``text``, ``vector``, ``image`` (bytes) or ``positive`` (paths, with optional
    ``negative`` paths: more like these), among the images that pass the metadata filters ``where`` (clauses,
    ANDed) and ``near`` (``LAT,LON,KM``), then the post-filters ``deduplicate`` and ``max_distance``.
    """

    k: int = 5
    text: str | None = None
    vector: Sequence[float] | None = None
    image: bytes | None = None
    positive: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()
    deduplicate: float | None = None
    max_distance: float | None = None
    where: tuple[str, ...] = ()
    near: str | None = None


def status_of(exc: ImgsimError) -> int:
    """The HTTP status of a refusal: the caller's fault (4xx) unless the server lacks what it needs (503)."""
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, decode.DecodeError):
        return 413 if exc.reason == SkipReason.TOO_LARGE else 422
    if isinstance(exc, WeightsError):
        return 503
    return 400


class Service:
    """One opened collection behind the HTTP API and the MCP server."""

    def __init__(self, collection: Collection, limits: Limits = Limits(),
                 extractor: Callable[[], Backbone] | None = None):
        self.collection = collection
        self.limits = limits
        root, index_dir = collection.index.root, collection.index.directory
        self.name = root.name or "collection"
        #: Server paths that messages must not show, and what they show instead (as the dashboard does).
        self.redactions = {str(index_dir): "(the index)", os.path.realpath(index_dir): "(the index)",
                           str(root): self.name, os.path.realpath(root): self.name, str(Path.home()): "~"}
        self._make_extractor = extractor or collection.extractor
        self._model: Backbone | None = None
        # One forward pass at a time: a shared model, bounded memory, and Keras is not built for racing threads.
        self._model_lock = threading.RLock()
        self._clusters: dict[int | None, tuple] = {}
        # One whole-collection computation at a time (a duplicates scan, k-means): each can take the cores for long.
        self._collection_lock = threading.Lock()
        collection.search  # built now, so that concurrent first requests do not each build it
        collection.metadata, collection.keywords  # the metadata table and keyword index: read now, likewise

    @classmethod
    def open(cls, index_dir: str | os.PathLike, limits: Limits = Limits()) -> "Service":
        """The service of the index at ``index_dir``."""
        return cls(Collection.open(index_dir), limits)

    def message(self, exc: BaseException) -> str:
        """What a caller reads about a refusal: one line, no server path."""
        return one_line(str(exc), self.redactions)

    @contextmanager
    def _turn(self, lock: threading.Lock | threading.RLock, what: str) -> Iterator[None]:
        """Hold ``lock``, waiting at most ``busy_wait_s``; a 503 with ``Retry-After`` if it stays taken."""
        if not lock.acquire(timeout=self.limits.busy_wait_s):
            wait = self.limits.retry_after_s
            raise ApiError(503, f"The server is busy with another {what}: try again in {wait} s.", retry_after=wait)
        try:
            yield
        finally:
            lock.release()

    def _model_turn(self):
        return self._turn(self._model_lock, "request that runs the model")

    def _extractor(self) -> Backbone:
        with self._model_turn():
            if self._model is None:
                self._model = self._make_extractor()
            return self._model

    # --- facts ----------------------------------------------------------------------------------------------

    def info(self) -> dict:
        """``info --json`` as a caller may see it (collection name, not server folders), with capabilities and limits."""
        col = self.collection
        data = {**info_dict(col), "metadata": metadata_info(col)}
        hidden = (SkipReason.OUTSIDE, SkipReason.DANGLING, SkipReason.LOOP)  # a symlink target is any server path
        data.update({
            "collection": self.name, "root": self.name,
            "preset": Path(data["preset"]).name if data.get("preset") else None,
            "weights_label": self.message(data["weights_label"]),
            "skipped": [{"path": s.path, "reason": s.reason.value,
                         "detail": "(target not shown)" if s.reason in hidden else self.message(s.detail)}
                        for s in col.index.skipped],
            "capabilities": {"text": col.supports_text, "explain": col.can_explain, "clusters": col.can_cluster,
                             "previews": col.has_previews()},
            "limits": self.limits.to_json(),
        })
        return data

    def locate(self, path: object) -> tuple[str, int, Path | None]:
        """``(relative path, row, file)`` of an indexed image; ``file`` is None when it is gone from the disk."""
        rel = relative_path(path)
        row = self.collection.index.row_of(rel)
        if row is None:
            raise ApiError(404, f"No image {quoted(rel)} in this collection.")
        real = inside(self.collection.index.root, self.collection.index.root / rel)
        if real is None:
            raise ApiError(403, f"{quoted(rel)} leads outside the collection: it is not served.")
        return rel, row, real if real.is_file() else None

    def _example(self, path: object) -> tuple[str, tuple[int | None, np.ndarray | None]]:
        """An indexed image as a query: its stored vector, or (its file changed since indexing) embedded again,
        as ``query`` does for a file."""
        rel, row, file = self.locate(path)
        col = self.collection
        if file is None or col.locate(file) == row:
            return rel, (row, None)
        with self._model_turn():
            return rel, col.embed_file(file, self._extractor)

    # --- searches -------------------------------------------------------------------------------------------

    def similar(self, path: object, k: int = 5, deduplicate: float | None = None, max_distance: float | None = None,
                where: Sequence[str] = (), near: str | None = None) -> dict:
        """``query INDEX PATH --json``: the image itself first at distance 0 (when it passes the filters), then
        its nearest among those that pass."""
        return self.search(SearchQuery(k=k, positive=(path,), deduplicate=deduplicate, max_distance=max_distance,
                                       where=tuple(where), near=near))

    def search(self, q: SearchQuery) -> dict:
        """One search (see :class:`SearchQuery`), answered as ``query --json`` answers the same inputs."""
        col, limits = self.collection, self.limits
        k = check_k(q.k, limits)
        if q.deduplicate is not None:
            check_distance("deduplicate", q.deduplicate)
        check_distance("max_distance", q.max_distance)
        kinds = [name for name, value in (("text", q.text), ("vector", q.vector), ("image", q.image),
                                          ("positive", q.positive)) if value not in (None, (), [])]
        if len(kinds) != 1:
            raise ApiError(400, "Send exactly one of text, vector, image or positive"
                                + (f" (got {', '.join(kinds)})." if kinds else "."))
        if q.negative and not q.positive:
            raise ApiError(400, "negative goes with positive: the images the results should look like.")
        check_examples(len(q.positive) + len(q.negative), limits)
        depth = min(col.count, max(k, min(k * DEDUP_DEPTH, limits.max_dedup_depth))) if q.deduplicate is not None \
            else k
        where = self._filter(q)
        if q.text is not None:
            return self._text(q, k, depth, where)
        if q.vector is not None:
            vector = unit_vector(q.vector, col.index.dims)
            found = self._keep(col.neighbors_of_vector(vector, depth, where), q, k)
            return self._with_filters(query_json(col, {"vector": len(vector)}, found), q, where)
        if q.image is not None:
            return self._upload(q, k, depth, where)
        positives = [self._example(p) for p in q.positive]
        negatives = [self._example(p) for p in q.negative]
        found = self._keep(col.query_examples([e for _, e in positives], [e for _, e in negatives], depth,
                                              where=where), q, k)
        if len(positives) == 1 and not negatives:
            return self._with_filters(query_json(col, positives[0][0], found), q, where)
        return self._with_filters(examples_json(col, [r for r, _ in positives], [r for r, _ in negatives], found), q,
                                  where)

    def _filter(self, q: SearchQuery) -> Filter:
        """The metadata filters of a query, parsed and checked against the collection's fields (a 400 otherwise)."""
        where = [q.where] if isinstance(q.where, str) else list(q.where)
        if not all(isinstance(w, str) for w in where) or not (q.near is None or isinstance(q.near, str)):
            raise ApiError(400, "where is a list of clauses such as \"taken >= 2023-07\", and near is LAT,LON,KM.")
        parsed = parse_where(where, q.near)
        self.collection.filter_mask(parsed)  # an unknown field or a wrong value is refused before any model runs
        return parsed

    def _text(self, q: SearchQuery, k: int, depth: int, where: Filter) -> dict:
        col = self.collection
        if not col.supports_text and not col.has_text_metadata:
            raise ApiError(400, f"Text search needs a CLIP index or images with text (captions, keywords); this one "
                                f"was built with {col.backbone.name}, which only compares images, and its images have "
                                "no text. Search with an image, a vector or positive paths instead.")
        if not isinstance(q.text, str) or len(q.text) > self.limits.max_text_chars:
            raise ApiError(400, f"text must be a description of at most {self.limits.max_text_chars} characters.")
        if not col.supports_text and q.max_distance is not None:
            raise ApiError(400, "max_distance needs image distances, and a keyword search (this index has no text "
                                "model) has none.")
        with self._model_turn():
            result, embedded = col.query_text(q.text, depth, model=self._extractor, where=where)
        return self._with_filters(text_json(col, embedded, self._keep(result, q, k), text=q.text,
                                            fusion=DEFAULT_WEIGHTS), q, where)

    def _upload(self, q: SearchQuery, k: int, depth: int, where: Filter) -> dict:
        col = self.collection
        if len(q.image) > self.limits.max_body_bytes:
            raise ApiError(413, f"The image is larger than {self.limits.max_body_bytes // 2**20} MiB.")
        with self._model_turn():  # bounded decoding (imgsim.decode's upload decoder), then one forward pass
            embedded = col.embed_bytes(q.image, self._extractor, decoder=decode.upload_model_input)
        found = self._keep(col.query_embedded(embedded, depth, where), q, k)
        indexed = col.paths[embedded[0]] if embedded[0] is not None else None
        return self._with_filters(query_json(col, {"upload": {"bytes": len(q.image), "indexed": indexed}}, found), q,
                                  where)

    def _keep(self, result: QueryResult, q: SearchQuery, k: int) -> QueryResult:
        """The results that pass the post-filters, at most k; with none given, the search's own answer."""
        if q.deduplicate is None and q.max_distance is None:
            return result
        kept = result.within(q.max_distance).neighbors
        if q.deduplicate is not None:
            kept = drop_near_copies(self.collection, kept, q.deduplicate)
        kept = [dataclasses.replace(n, rank=rank) for rank, n in enumerate(kept[:k], start=1)]
        return QueryResult(kept, result.row, len(kept))

    @staticmethod
    def _with_filters(data: dict, q: SearchQuery, where: Filter) -> dict:
        return {**data, **filter_fields(where, q.max_distance, q.deduplicate)}

    # --- images and the collection as a whole ---------------------------------------------------------------

    def thumbnail(self, path: object, size: int | None = None) -> bytes:
        """A JPEG of an indexed image, longest side ``size``: from its file (decoded with bounded memory), else the
        small preview stored in the index."""
        limits = self.limits
        size = limits.thumbnail_default if size is None else size
        check_range("size", size, limits.thumbnail_min, limits.thumbnail_max)
        rel, row, file = self.locate(path)
        if file is not None:
            try:
                im = decode.upload_thumbnail(decode.read_bytes(file), int(size))
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=85)
                return buf.getvalue()
            except decode.DecodeError:
                pass  # changed into something unreadable since indexing: the stored preview still shows it
        preview = self.collection.preview(row)
        if preview is None:
            raise ApiError(404, f"The file of {quoted(rel)} is not available and the index keeps no preview of it.")
        return preview

    def duplicates(self, threshold: float) -> dict:
        """``dedup --threshold T --json``, the scan stopped after ``max_pairs`` linked pairs: then the answer also
        says ``truncated`` (its groups are incomplete), ``max_pairs`` and a ``note``."""
        limits = self.limits
        threshold = float(check_range("threshold", threshold, 0, limits.max_threshold))
        with self._turn(self._collection_lock, "duplicates or clusters computation"):
            scan = duplicate_scan(self.collection.search, threshold, limits.max_pairs)
        data = dedup_json(self.collection, threshold, scan.groups)
        if scan.truncated:
            data.update(truncated=True, max_pairs=limits.max_pairs, note=scan.note(threshold))
        return data

    def clusters(self, k: int | None = None, central: int = 5) -> dict:
        """``cluster [--k K] --json``: k-means albums (the suggested k, by silhouette, when k is not given)."""
        if k is not None:
            check_range("k", k, 1, self.limits.max_clusters)
        check_range("central", central, 1, self.limits.max_central)
        cached = self._clusters.get(k)  # repeated questions are answered from the cache, without waiting
        if cached is None:
            with self._turn(self._collection_lock, "duplicates or clusters computation"):
                cached = self._clusters.get(k)  # computed by the request this one waited for
                if cached is None:
                    suggested = self.collection.suggest_k() if k is None else None
                    cached = (self.collection.clusters(k if k is not None else suggested.k), suggested)
                    if len(self._clusters) >= CLUSTER_CACHE:
                        self._clusters.pop(next(iter(self._clusters)))
                    self._clusters[k] = cached
        model, suggested = cached
        return clusters_json(self.collection, model, k, int(central), suggested)

    def explain(self, a: object, b: object) -> dict:
        """``explain INDEX A B --json``: why two indexed images are similar, cell by cell of the 7x7 grid."""
        col = self.collection

        def side(path: object) -> tuple[str, int | bytes]:
            rel, row, file = self.locate(path)
            if file is None:
                return rel, row
            data = decode.read_bytes(file)  # as the CLI does: the file as it is now
            found = col.locate(file, data)
            return rel, found if found is not None else data

        (rel_a, x), (rel_b, y) = side(a), side(b)
        with self._model_turn():
            explanation = col.explain(x, y, extractor=self._extractor, decoder=decode.upload_model_input)
        return explain_json(col, rel_a, rel_b, explanation)


def drop_near_copies(col: Collection, neighbors: list, threshold: float) -> list:
    """Neighbours in order, without any within ``threshold`` (distance) of one kept before it."""
    if not neighbors:
        return []
    vectors = np.asarray(col.index.vectors[[n.row for n in neighbors]], dtype=np.float64)
    kept: list[int] = []
    for i in range(len(neighbors)):
        if kept:
            cos = vectors[kept] @ vectors[i]
            if np.sqrt(np.maximum(0.0, 2.0 - 2.0 * cos)).min() <= threshold:
                continue
        kept.append(i)
    return [neighbors[i] for i in kept]
