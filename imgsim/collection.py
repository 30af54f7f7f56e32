"""An opened index ready for questions: neighbours of an indexed image, a file, uploaded bytes or a text (vectors
and keywords fused), under metadata filters; duplicate groups, the map, the places. The CLI, the API and the
dashboard all work through this."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageOps

from imgsim import decode
from imgsim.models.base import (Backbone, BackboneSpec, TextEmbedding, TextSearchUnavailable, make_backbone,
                       text_search_help)
from imgsim.analysis.duplicates import MAX_PAIRS, DuplicateGroup, DuplicateScan, duplicate_groups, duplicate_scan, nearest_distances
from imgsim.errors import ImgsimError
from imgsim.analysis.evaluate import Evaluation, evaluate
from imgsim.models.weights import WeightsError, weights_spec
from imgsim.store.generations import Index, load_index, unpack_blob
from imgsim.analysis.map2d import GridLayout, grid_layout, render_grid
from imgsim.search import Neighbors, Search, cosine_from_distance, describe, open_search, recorded_method
from imgsim.analysis.clusters import ClusterModel, SuggestedK, suggest_k
from imgsim.analysis.explain import Explanation, explain_flatten, explain_maps
from imgsim.analysis.outliers import Outlier, find_outliers
from imgsim.analysis.recommend import NEGATIVE_WEIGHT, rocchio
from imgsim.metadata.filters import Filter
from imgsim.metadata.fusion import DEFAULT_WEIGHTS, SourceHit, rrf
from imgsim.metadata.keywords import KeywordIndex
from imgsim.metadata.table import FieldInfo, MetadataTable
from imgsim.store.metadata import load_keywords, load_metadata

#: Each ranking that a text query fuses looks this much deeper than k (at least FUSION_MIN), so that rows ranked
#: well by one source and lower by the other still meet.
FUSION_DEPTH, FUSION_MIN = 4, 50
#: Filter masks kept per collection (a page reruns with the same filters).
MASK_CACHE = 8


@dataclass(frozen=True)
class Neighbor:
    """One search result; ``distance`` and ``similarity`` are None for a keyword result of an image-only index."""

    rank: int
    row: int
    path: str
    distance: float | None
    similarity: float | None
    #: Where a text query's rank came from: per source (``vector``, ``keywords``) its rank and its own score.
    scores: dict[str, SourceHit] | None = None

    def to_json(self) -> dict:
        out = {"path": self.path, "distance": None if self.distance is None else round(self.distance, 6),
               "similarity": None if self.similarity is None else round(self.similarity, 6)}
        if self.scores is not None:
            out["scores"] = {name: {"rank": h.rank, "score": round(h.score, 6)} for name, h in self.scores.items()}
        return out


@dataclass(frozen=True)
class QueryResult:
    """The neighbours of one query, nearest first; ``row`` is set when the query is itself indexed."""

    neighbors: list[Neighbor]
    row: int | None
    k: int

    def within(self, max_distance: float | None) -> "QueryResult":
        """The neighbours at distance ``<= max_distance`` (all when None), ranked again from 1."""
        if max_distance is None:
            return self
        kept = [n for n in self.neighbors if n.distance is not None and n.distance <= max_distance]
        kept = [dataclasses.replace(n, rank=rank) for rank, n in enumerate(kept, start=1)]
        return QueryResult(kept, self.row, len(kept))


def default_index_dir(folder: str | os.PathLike, weights: str | None) -> Path:
    """Where the dashboard keeps the index of a folder when none is named: one per folder and weights,
    under ``$IMGSIM_CACHE`` (default ``~/.cache/imgsim``), so a random-weights index is never shown as real."""
    real = os.path.realpath(Path(folder).expanduser())
    spec = (weights or "imagenet").strip()
    kind = spec if spec in ("imagenet",) or spec.startswith("random") else "file-" + hashlib.sha1(
        os.path.realpath(spec).encode()).hexdigest()[:8]
    cache = Path(os.environ.get("IMGSIM_CACHE") or Path.home() / ".cache" / "imgsim")
    name = f"{Path(real).name or 'root'}-{hashlib.sha1(real.encode()).hexdigest()[:10]}-{kind.replace(':', '')}"
    return cache / "indexes" / f"{name}.imgsim"


def folder_label(rel_path: str) -> str:
    """An image's sub-folder (the first component of its relative path), or '' at the top level."""
    return rel_path.split("/", 1)[0] if "/" in rel_path else ""


class Collection:
    """An index plus the search structures stored with it; the model is only built when needed."""

    def __init__(self, index: Index):
        self.index = index
        self._search: Search | None = None
        self._masks: dict[Filter, np.ndarray] = {}
        self._masks_lock = threading.Lock()  # a server answers queries on several threads

    @classmethod
    def open(cls, index_dir: str | os.PathLike) -> "Collection":
        return cls(load_index(index_dir))

    # --- facts ---------------------------------------------------------------------------------------

    @property
    def paths(self) -> list[str]:
        return self.index.paths

    @property
    def count(self) -> int:
        return self.index.count

    @property
    def is_random(self) -> bool:
        return self.index.is_random

    @property
    def weights_label(self) -> str:
        return self.index.weights["label"]

    @property
    def backbone(self) -> BackboneSpec:
        """The model that built this index (and the only one its queries may be embedded with)."""
        return BackboneSpec.from_meta(self.index.meta)

    @property
    def supports_text(self) -> bool:
        return self.backbone.supports_text

    @property
    def resample(self) -> str:
        """The filter this index's images were squashed with for the model: a query must be decoded alike."""
        return self.backbone.capabilities.resample

    @functools.cached_property
    def labels(self) -> list[str]:
        """Each image's sub-folder (its first path component), or '' for files at the top level."""
        return [folder_label(p) for p in self.paths]

    def label_of(self, row: int) -> str:
        """One image's label (see :attr:`labels`) without computing every label."""
        return folder_label(self.paths[int(row)])

    @functools.cached_property
    def _folded_paths(self) -> list[str]:
        return [p.casefold() for p in self.paths]

    def rows_matching(self, needle: str, limit: int | None = None) -> np.ndarray:
        """Rows whose relative path contains ``needle`` (case-insensitive), in row order; ``limit`` keeps the
        first ones. Every row for an empty needle, without a scan; the last few answers are kept, so reruns
        with the same filter do not scan a large collection again."""
        needle = needle.strip().casefold()
        if not needle:
            return np.arange(self.count if limit is None else min(limit, self.count))
        cache = self.__dict__.setdefault("_matches", {})
        if (needle, limit) not in cache:
            rows = []
            for r, p in enumerate(self._folded_paths):
                if needle in p:
                    rows.append(r)
                    if limit is not None and len(rows) >= limit:
                        break
            if len(cache) >= 8:
                cache.pop(next(iter(cache), None), None)
            cache[(needle, limit)] = np.asarray(rows, dtype=np.int64)
        return cache[(needle, limit)]

    def image_path(self, row: int) -> Path:
        return self.index.root / self.paths[row]

    def preview(self, row: int) -> bytes | None:
        """The small JPEG stored for a row at indexing time (None for indexes without previews)."""
        if not self.index.has_array("thumb_blob"):
            return None
        data = unpack_blob(self.index.array("thumb_blob"), self.index.array("thumb_offsets"), row)
        return data or None

    def has_previews(self) -> bool:
        """Whether any row has a stored preview (indexes built without image files have none)."""
        return self.index.has_array("thumb_offsets") and self.count > 0 and int(self.index.array("thumb_offsets")[-1]) > 0

    def preview_tile(self, rows: np.ndarray, cell: int = 64, columns: int = 32) -> Image.Image:
        """The stored previews of ``rows`` in one sprite sheet: row ``rows[p]`` at cell (p // columns, p % columns)."""
        rows = np.asarray(rows)
        positions = np.arange(len(rows))
        side = max(1, math.ceil(len(rows) / columns))
        layout = GridLayout(positions, np.stack([positions // columns, positions % columns], axis=1), columns)

        def tile(position: int) -> Image.Image | None:
            data = self.preview(int(rows[position]))
            if data is None:
                return None
            return ImageOps.pad(Image.open(io.BytesIO(data)).convert("RGB"), (cell, cell), color=(255, 255, 255))

        sheet = render_grid(layout, tile, cell_px=cell)
        return sheet.crop((0, 0, columns * cell, side * cell))

    def grid_image(self, cell: int = 64, max_items: int = 1024) -> tuple[Image.Image, int]:
        """The t-SNE map snapped to a grid of square thumbnails; also returns how many images it shows.

        A file that changed or vanished since indexing leaves its cell blank.
        """
        layout = grid_layout(self.map_xy(), max_items=max_items)

        def tile(row: int) -> Image.Image | None:
            try:
                return decode.thumbnail(decode.read_bytes(self.image_path(row)), cell, square="crop")
            except decode.DecodeError:
                return None

        return render_grid(layout, tile, cell_px=cell), len(layout.rows)

    def map_xy(self) -> np.ndarray:
        return np.asarray(self.index.array("map_xy"))

    def nearest_distances(self) -> np.ndarray:
        return nearest_distances(self.index.array("nn_distances"))

    @property
    def search_method(self) -> str:
        """The search method that answers queries (:data:`imgsim.search.METHODS`): ``exact`` or ``ann``."""
        return recorded_method(self.index.meta)

    def search_info(self) -> dict:
        """Which search method answers queries and, for ANN, recall@10 against exact measured at build time."""
        search = dict(self.index.meta.get("search") or {"method": "exact", "chosen": "auto"})
        if search["method"] == "exact":
            search["recall_at_10"] = 1.0
        return search

    def search_summary(self, short: bool = False) -> str:
        """How neighbours are found, and how well, as measured: a sentence for people (the dashboard's About),
        or ``short`` the summary ``imgsim info`` prints."""
        return describe(self.search_info(), short=short)

    @property
    def search(self) -> Search:
        """The search this index answers queries with, opened on first use."""
        if self._search is None:
            self._search = open_search(self.index)
        return self._search

    # --- metadata: fields, filters, places, keywords --------------------------------------------------

    @functools.cached_property
    def metadata(self) -> MetadataTable | None:
        """What is known about each image (row i = image i); None for an index built before imgsim read it."""
        return load_metadata(self.index)

    def metadata_fields(self) -> list[FieldInfo]:
        """Every metadata field with its kind and how many images have a value (none without metadata)."""
        return self.metadata.fields() if self.metadata is not None else []

    def metadata_of(self, rows: Sequence[int] | np.ndarray) -> list[dict]:
        """The known metadata values of ``rows``, one JSON-ready dict each (empty without metadata)."""
        return self.metadata.rows(rows) if self.metadata is not None else [{} for _ in rows]

    def filter_mask(self, where: Filter | None) -> np.ndarray | None:
        """True for the rows that pass ``where`` (None: no filter, every row); the last few masks are kept."""
        if not where:
            return None
        if self.metadata is None:
            raise ImgsimError(f"The index at {self.index.directory} holds no metadata (it was built before imgsim "
                              f"read any), so it cannot filter. Update it to add the metadata: python -m imgsim "
                              f"index {self.index.root} --index {self.index.directory}")
        with self._masks_lock:
            if where not in self._masks:
                if len(self._masks) >= MASK_CACHE:
                    self._masks.pop(next(iter(self._masks)))
                self._masks[where] = where.mask(self.metadata)
            return self._masks[where]

    def places(self, where: Filter | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rows with a GPS position (that pass ``where``), with their latitudes and longitudes."""
        if self.metadata is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
        lat = self.metadata.column("lat").to_numpy(zero_copy_only=False).astype(np.float64)
        lon = self.metadata.column("lon").to_numpy(zero_copy_only=False).astype(np.float64)
        keep = np.isfinite(lat) & np.isfinite(lon)
        mask = self.filter_mask(where)
        rows = np.flatnonzero(keep if mask is None else keep & mask)
        return rows, lat[rows], lon[rows]

    @functools.cached_property
    def keywords(self) -> KeywordIndex | None:
        """BM25 over each image's metadata text, built at index time; None when no image has text beyond its
        file name (a caption, keywords, a description)."""
        return load_keywords(self.index)

    @property
    def has_text_metadata(self) -> bool:
        """Whether a text query can search the images' words (see :attr:`keywords`)."""
        return self.keywords is not None

    def search_keywords(self, text: str, k: int, where: Filter | None = None) -> QueryResult:
        """The k images whose metadata text best matches ``text`` (BM25), best first, under ``where``."""
        if self.keywords is None:
            raise ImgsimError(f"The images of the index at {self.index.directory} have no text to search (no "
                              "caption, keyword or description): add some with --metadata FILE when indexing.")
        rows, scores = self.keywords.search(text, k, self.filter_mask(where))
        hits = [Neighbor(rank, int(r), self.paths[int(r)], None, None, {"keywords": SourceHit(rank, float(s))})
                for rank, (r, s) in enumerate(zip(rows, scores), start=1)]
        return QueryResult(hits, None, len(hits))

    # --- queries -------------------------------------------------------------------------------------

    def _results(self, found: Neighbors) -> list[Neighbor]:
        # Approximate search pads with row -1 at an infinite distance when its probed cells hold fewer than k
        # rows: those are no neighbours (row -1 would name the last image).
        hits = [(int(r), float(d)) for r, d in zip(found.indices[0], found.distances[0]) if r >= 0 and np.isfinite(d)]
        return [Neighbor(rank, r, self.paths[r], d, float(cosine_from_distance(d)))
                for rank, (r, d) in enumerate(hits, start=1)]

    def neighbors_of_row(self, row: int, k: int, where: Filter | None = None) -> QueryResult:
        """Neighbours of an indexed image: itself first at distance 0 (when it passes ``where``), then its nearest
        among the images that pass."""
        if not 0 <= row < self.count:
            raise ImgsimError(f"No image number {row} in this index (it has {self.count}).")
        vector = np.asarray(self.index.vectors[row])
        found = self._results(self.search.kneighbors(vector[None, :], k, prefer=row, allowed=self.filter_mask(where)))
        return QueryResult(found, row, len(found))

    def neighbors_of_vector(self, vector: np.ndarray, k: int, where: Filter | None = None) -> QueryResult:
        """The k images nearest to a vector, among those that pass ``where``."""
        query = np.asarray(vector, dtype=np.float32)[None, :]
        found = self._results(self.search.kneighbors(query, k, allowed=self.filter_mask(where)))
        return QueryResult(found, None, len(found))

    def locate(self, path: str | os.PathLike, data: bytes | None = None) -> int | None:
        """The row of a file that is indexed: by its path under the root (if unchanged) or its content."""
        p = Path(path).expanduser()
        try:
            rel = Path(os.path.realpath(p)).relative_to(self.index.root).as_posix()
        except ValueError:
            rel = None
        row = self.index.row_of(rel) if rel else None
        if row is not None:
            st = p.stat()
            entry = self.index.entries[row]
            if (st.st_size, st.st_mtime_ns) == (entry.size, entry.mtime_ns):
                return row
        if data is not None:
            return self.index.row_with_hash(hashlib.sha256(data).hexdigest())
        return None

    def query_file(self, path: str | os.PathLike, k: int, extractor: Callable[[], Backbone] | None = None,
                   where: Filter | None = None) -> QueryResult:
        """Neighbours of an image file (found as :meth:`read_file` says): its stored vector when it is indexed,
        else it is embedded."""
        return self.query_embedded(self.embed_file(path, extractor), k, where)

    def read_file(self, path: str | os.PathLike) -> tuple[int | None, bytes] | None:
        """The image file a query names, read: its row when it is indexed (by path or content) and its bytes;
        None when there is no such file. The path as given wins when a file is there; else it is taken relative
        to the collection's folder, so that a path the results show can be given back."""
        p = Path(path).expanduser()
        if not p.is_file():
            inside = self.index.root / p
            # Only paths below the folder: "../x" names a file outside the collection, not one of its images.
            if p.is_absolute() or ".." in p.parts or not inside.is_file():
                return None
            p = inside
        data = decode.read_bytes(p)
        return self.locate(p, data), data

    def query_bytes(self, data: bytes, k: int, extractor: Callable[[], Backbone] | None = None,
                    where: Filter | None = None) -> QueryResult:
        """Neighbours of an image given as bytes (an upload); decoded in memory, never written to disk."""
        return self.query_embedded(self.embed_bytes(data, extractor), k, where)

    def embed_bytes(self, data: bytes, extractor: Callable[[], Backbone] | None = None,
                    decoder: Callable[..., np.ndarray] = decode.model_input
                    ) -> tuple[int | None, np.ndarray | None]:
        """``(row, None)`` when these bytes are an indexed file, else ``(None, vector)`` from the model.

        ``decoder(data, resample=...)`` turns bytes into the model input with the backbone's filter; a server
        passes :func:`decode.upload_model_input`.
        """
        row = self.index.row_with_hash(hashlib.sha256(data).hexdigest())
        if row is not None:
            return row, None
        pixels = decoder(data, resample=self.resample)  # a bad upload fails here, before any model is built
        model = (extractor or self.extractor)()
        return None, model.embed(pixels[None])[0]

    def query_embedded(self, embedded: tuple[int | None, np.ndarray | None], k: int,
                       where: Filter | None = None) -> QueryResult:
        """Neighbours for the result of :meth:`embed_bytes`, among the images that pass ``where``."""
        row, vector = embedded
        return self.neighbors_of_row(row, k, where) if row is not None else self.neighbors_of_vector(vector, k, where)

    def extractor(self, weights: str | None = None, batch_size: int = 16) -> Backbone:
        """A model matching this index's backbone, weights and pooling (weights checked by content hash)."""
        spec = self.backbone.parse_weights(weights or weights_spec(self.index.weights))
        model = make_backbone(self.backbone, spec, self.index.pooling, batch_size)
        check_compatible(self, model)
        return model

    def embed_text(self, text: str, model: Callable[[], object] | None = None) -> TextEmbedding:
        """A text query's unit vector from this index's own CLIP model (refused on image-only indexes)."""
        if not self.supports_text:
            raise TextSearchUnavailable(text_search_help(self.backbone.spec, str(self.index.directory),
                                                            str(self.index.root)))
        _check_text(text)
        return (model or self.extractor)().embed_text(text)

    def query_text(self, text: str, k: int, model: Callable[[], object] | None = None, where: Filter | None = None,
                   fusion: dict[str, float] | None = DEFAULT_WEIGHTS, embedded: TextEmbedding | None = None
                   ) -> tuple[QueryResult, TextEmbedding | None]:
        """The k images that best match a description, and the text as the model read it (None: no model).

        A CLIP index ranks by its text vector (``embedded``, when the caller already has it from
        :meth:`embed_text`) and, when its images have metadata text, fuses that ranking with BM25 over the text by
        reciprocal rank (``fusion``: the weights, None for vectors alone); an image-only index with metadata text
        ranks by BM25 alone; without either, it is refused (:meth:`embed_text`).
        """
        if not self.supports_text and self.has_text_metadata:
            _check_text(text)
            return self.search_keywords(text, k, where), None
        embedded = embedded or self.embed_text(text, model)
        if fusion is None or not self.has_text_metadata or not fusion.get("keywords", 1.0):
            return self.neighbors_of_vector(embedded.vector, k, where), embedded
        depth = min(self.count, max(FUSION_MIN, FUSION_DEPTH * k))
        by_vector = self.neighbors_of_vector(embedded.vector, depth, where).neighbors
        by_words = self.search_keywords(text, depth, where).neighbors
        fused = rrf({"vector": ([n.row for n in by_vector], [n.distance for n in by_vector]),
                     "keywords": ([n.row for n in by_words], [n.scores["keywords"].score for n in by_words])},
                    weights=fusion, limit=k)
        rows = np.array([h.row for h in fused], dtype=np.int64)
        order = np.argsort(rows)  # memory-mapped rows are read in order
        vectors = np.empty((len(rows), self.index.dims), dtype=np.float64)
        vectors[order] = self.index.vectors[rows[order]]
        d = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * (vectors @ embedded.vector.astype(np.float64))))
        hits = [Neighbor(i + 1, h.row, self.paths[h.row], float(d[i]), float(cosine_from_distance(d[i])), h.sources)
                for i, h in enumerate(fused)]
        return QueryResult(hits, None, len(hits)), embedded

    def neighbor_table(self, k: int) -> np.ndarray:
        """Rows of each image's k nearest other images (from the stored graph when it is deep enough)."""
        stored = self.index.array("nn_indices")
        if k <= stored.shape[1]:
            return np.asarray(stored[:, :k])
        return self.search.kneighbors_rows(np.arange(self.count), k).indices

    def evaluate(self, k: int = 5) -> Evaluation:
        """precision@k and 1-NN accuracy against sub-folder labels, with the random-ranking baseline."""
        return evaluate(self.labels, self.neighbor_table(k), k)

    def duplicate_groups(self, threshold: float, where: Filter | None = None) -> list[DuplicateGroup]:
        """Groups of images closer than ``threshold``, among the images that pass ``where``."""
        return duplicate_groups(self.search, threshold, self.filter_mask(where))

    def duplicate_scan(self, threshold: float, where: Filter | None = None,
                       max_pairs: int | None = MAX_PAIRS) -> DuplicateScan:
        """:meth:`duplicate_groups`, the scan stopped after ``max_pairs`` linked pairs (then ``truncated``)."""
        return duplicate_scan(self.search, threshold, max_pairs, self.filter_mask(where))

    # --- exploration: clusters, why similar, more like these, odd ones out ---------------------------

    @property
    def can_cluster(self) -> bool:
        """Clusters use the stored PCA coordinates of every image, which approximate-search indexes do not keep."""
        return self.index.has_array("projected")

    def _cluster_coords(self) -> np.ndarray:
        if not self.can_cluster:
            raise ImgsimError(f"Clusters need the PCA coordinates of every image, which this index does not store: it "
                              f"answers queries with approximate search ({self.count:,} images). To cluster it, build "
                              "an index with exact search: python -m imgsim index SRC_DIR --index NEW_INDEX_DIR "
                              "--search exact")
        return self.index.array("projected")

    def clusters(self, k: int, random_state: int = 0) -> ClusterModel:
        """k-means on the stored PCA projections (k clamped to the collection size)."""
        return ClusterModel(k, random_state=random_state).fit(self._cluster_coords())

    def suggest_k(self, k_max: int = 12) -> SuggestedK:
        """The k with the best silhouette score on a sample of the PCA projections."""
        return suggest_k(self._cluster_coords(), k_max=k_max)

    def outliers(self, n: int = 20, k: int = 5) -> list[Outlier]:
        """The images farthest from their ``k`` nearest neighbours, oddest first (from the stored graph)."""
        return find_outliers(self.index.array("nn_distances"), n, k)

    def central_row(self) -> int | None:
        """The image nearest to the collection's mean vector (the stored PCA mean), found by the index's own
        search: exact for exact indexes, and no scan of every vector on approximate ones."""
        if self.count == 0:
            return None
        mean = np.asarray(self.index.array("pca_mean"), dtype=np.float32)
        return self.neighbors_of_vector(mean, 1).neighbors[0].row

    def embed_file(self, path: str | os.PathLike, extractor: Callable[[], Backbone] | None = None
                   ) -> tuple[int | None, np.ndarray | None]:
        """``(row, None)`` for an indexed file (by path or content), else ``(None, vector)`` from the model.

        ``path`` is found as :meth:`read_file` says.
        """
        found = self.read_file(path)
        if found is None:
            raise ImgsimError(f"Query image not found: {Path(path).expanduser()}")
        row, data = found
        return (row, None) if row is not None else self.embed_bytes(data, extractor)

    def _vector(self, embedded: tuple[int | None, np.ndarray | None]) -> np.ndarray:
        row, vector = embedded
        return np.asarray(self.index.vectors[row], dtype=np.float32) if row is not None else vector

    def query_examples(self, positives: list[tuple[int | None, np.ndarray | None]],
                       negatives: list[tuple[int | None, np.ndarray | None]] = (), k: int = 5,
                       weight: float = NEGATIVE_WEIGHT, where: Filter | None = None) -> QueryResult:
        """More like these: neighbours of the Rocchio vector of positive and negative examples, under ``where``.

        Examples are what :meth:`embed_bytes` / :meth:`embed_file` return. One positive and no negative is
        exactly the plain query (an indexed image first at distance 0).
        """
        if len(positives) == 1 and not negatives:
            return self.query_embedded(positives[0], k, where)
        # Generators: the vectors are read and averaged one at a time, never stacked.
        query = rocchio((self._vector(e) for e in positives), (self._vector(e) for e in negatives), weight)
        return self.neighbors_of_vector(query, k, where)

    @property
    def can_explain(self) -> bool:
        """Whether the vectors come from a backbone's feature grid (flatten or avg), which :meth:`explain` needs."""
        return self.backbone.capabilities.feature_grid is not None and self.index.pooling in ("flatten", "avg")

    def explain(self, a: int | bytes, b: int | bytes,
                extractor: Callable[[], Backbone] | None = None,
                decoder: Callable[..., np.ndarray] = decode.model_input) -> Explanation:
        """Why ``a`` and ``b`` (rows, or image bytes) are similar, cell by cell of the 7x7 grid.

        ``flatten``: from the stored vectors (the model only for bytes that are not indexed).
        ``avg``: the 7x7x2048 maps are computed again, so the model is always needed.
        ``decoder`` turns bytes into the model input (as in :meth:`embed_bytes`); a server passes
        :func:`decode.upload_model_input`.
        """
        if not self.can_explain:
            raise ImgsimError(f"Per-cell explanations need a ResNet50 index (flatten or avg); this one was built "
                              f"with {self.backbone.name} ({self.index.pooling}), which has no 7x7 grid.")

        def vector(x: int | bytes) -> np.ndarray:
            return self._vector((x, None) if isinstance(x, (int, np.integer)) else self.embed_bytes(x, extractor, decoder))

        va, vb = vector(a), vector(b)
        if self.index.pooling == "flatten":
            return explain_flatten(va, vb)

        def pixels(x: int | bytes) -> np.ndarray:
            if isinstance(x, (int, np.integer)):
                return decode.model_input(decode.read_bytes(self.image_path(int(x))), resample=self.resample)
            return decoder(x, resample=self.resample)

        model = (extractor or self.extractor)()
        maps = model.feature_maps(np.stack([pixels(a), pixels(b)]))
        return explain_maps(maps[0], maps[1], float(np.dot(va.astype(np.float64), vb.astype(np.float64))))


def _check_text(text: str) -> None:
    if not " ".join(str(text).split()):
        raise ImgsimError("The text is empty: describe what you are looking for, e.g. \"a red car at night\".")


def check_compatible(collection: Collection, model: Backbone) -> None:
    """Refuse a model whose vectors could not be compared with the index's."""
    ix = collection.index
    if model.name != collection.backbone.name:
        raise ImgsimError(f"The model is {model.name} but the index was built with "
                          f"{collection.backbone.spec}: their vectors cannot be compared.")
    if model.pooling != ix.pooling:
        raise ImgsimError(f"The model uses pooling {model.pooling} but the index was built with {ix.pooling}.")
    expected = ix.weights.get("identity")
    if expected and model.weights.identity != expected:
        raise WeightsError(f"The weights loaded ({model.weights.label}) are not the ones that built this index "
                           f"({ix.weights['label']}). Pass the same weights (--weights / IMGSIM_WEIGHTS).")
