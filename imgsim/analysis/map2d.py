"""The 2-D map: PCA coordinates to a t-SNE layout, and the t-SNE layout snapped to a thumbnail grid."""

from __future__ import annotations

import math
import re
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from imgsim.progress import ProgressFn

#: The line scikit-learn's t-SNE prints every 50 iterations at ``verbose=2``: its only report of how far it is.
_ITERATION = re.compile(r"\[t-SNE\] Iteration (\d+):")
_route = threading.local()
_route_lock = threading.Lock()
_router: "_ThreadStdout | None" = None
_router_users = 0


class _ThreadStdout:
    """``sys.stdout`` while a map is fitted: what a fitting thread prints goes to that fit's sink, every other
    thread's output to the stream it replaced (the server's other sessions, the CLI's own output)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        sink = getattr(_route, "sink", None)
        if sink is None:
            return self.stream.write(text)
        sink(text)
        return len(text)

    def flush(self) -> None:
        if getattr(_route, "sink", None) is None:
            self.stream.flush()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


@contextmanager
def _tsne_iterations(report: Callable[[int], None]) -> Iterator[None]:
    """Call ``report(iteration)`` for each iteration line t-SNE prints in this thread; its other lines
    (neighbours, sigma, KL divergence) are dropped, so nothing reaches the terminal."""
    global _router, _router_users
    with _route_lock:
        if _router_users == 0:
            _router = _ThreadStdout(sys.stdout)
            sys.stdout = _router
        _router_users += 1
    pending = [""]

    def sink(text: str) -> None:
        *lines, pending[0] = (pending[0] + text).split("\n")
        for line in lines:
            match = _ITERATION.match(line)
            if match:
                _route.sink = None  # what the callback prints itself goes where it would
                try:
                    report(int(match.group(1)))
                finally:
                    _route.sink = sink

    _route.sink = sink
    try:
        yield
    finally:
        _route.sink = None
        with _route_lock:
            _router_users -= 1
            if _router_users == 0:
                if sys.stdout is _router:  # someone who replaced it since keeps theirs
                    sys.stdout = _router.stream
                _router = None


class MapBuilder:
    """PCA (first ``n_components`` coordinates, clamped) then 2-D t-SNE, as in the reference notebook.

    ``perplexity_`` and ``n_components_`` report the values actually used for small collections. With a
    ``progress`` callback, :meth:`fit` reports stage ``"map"`` as (iteration, ``max_iter``) every 50 iterations,
    read from t-SNE's own verbose lines (the layout is the same with or without it).
    """

    def __init__(self, n_components: int = 100, perplexity: float = 30.0, random_state: int = 0,
                 max_iter: int = 1000):
        self.n_components = n_components
        self.perplexity = perplexity
        self.random_state = random_state
        self.max_iter = max_iter

    def fit(self, pca_coords: np.ndarray, progress: ProgressFn | None = None) -> "MapBuilder":
        """Lay out rows of PCA coordinates (columns ordered by explained variance)."""
        x = np.asarray(pca_coords, dtype=np.float32)
        x = x.reshape(len(x), -1) if x.ndim != 2 else x
        n = len(x)
        self.n_components_ = int(min(self.n_components, x.shape[1]))
        x = x[:, :self.n_components_]
        self.perplexity_ = float(min(self.perplexity, max((n - 1) / 3.0, 0.0)))
        if n < 4 or self.n_components_ == 0:
            # Too few points for t-SNE: place them along the first principal directions.
            layout = np.zeros((n, 2), dtype=np.float32)
            cols = min(2, self.n_components_)
            layout[:, :cols] = x[:, :cols]
            self.embedding_ = layout
            if progress:
                progress("map", 1, 1)
            return self
        from sklearn.manifold import TSNE  # imported on use: opening the dashboard stays fast

        tsne = TSNE(n_components=2, perplexity=self.perplexity_, init="pca", learning_rate="auto",
                    random_state=self.random_state, max_iter=self.max_iter, verbose=2 if progress else 0)
        if progress is None:
            self.embedding_ = tsne.fit_transform(x).astype(np.float32)
            return self
        progress("map", 0, self.max_iter)
        with _tsne_iterations(lambda i: progress("map", min(i, self.max_iter), self.max_iter)):
            self.embedding_ = tsne.fit_transform(x).astype(np.float32)
        progress("map", self.max_iter, self.max_iter)  # t-SNE may stop early once it has converged
        return self


@dataclass(frozen=True)
class GridLayout:
    """Which rows of the map are drawn (``rows``) and the (row, column) cell each one occupies."""

    rows: np.ndarray
    cells: np.ndarray
    side: int


def grid_layout(xy: np.ndarray, max_items: int = 1024, random_state: int = 0) -> GridLayout:
    """Snap 2-D points to a square grid, one point per cell, keeping neighbours together.

    The assignment minimises the total squared displacement (``scipy.optimize.linear_sum_assignment``).
    Collections larger than ``max_items`` are sampled evenly at random (deterministically).
    """
    xy = np.asarray(xy, dtype=np.float64)
    n = len(xy)
    rows = np.arange(n)
    if n > max_items:
        rows = np.sort(np.random.default_rng(random_state).choice(n, max_items, replace=False))
    if len(rows) == 0:
        return GridLayout(rows, np.zeros((0, 2), dtype=np.int64), 0)
    pts = xy[rows]
    span = np.ptp(pts, axis=0)
    pts = (pts - pts.min(axis=0)) / np.where(span > 0, span, 1.0)
    side = math.ceil(math.sqrt(len(rows)))
    ii, jj = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    # Cell (i, j): row i counts from the top, so y grows upwards as on the scatter plot.
    centres = np.stack([(jj.ravel() + 0.5) / side, 1.0 - (ii.ravel() + 0.5) / side], axis=1)
    from scipy.optimize import linear_sum_assignment

    cost = ((pts[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    item, cell = linear_sum_assignment(cost)
    cells = np.zeros((len(rows), 2), dtype=np.int64)
    cells[item] = np.stack([cell // side, cell % side], axis=1)
    return GridLayout(rows, cells, side)


def render_grid(layout: GridLayout, thumbnail: Callable[[int], Image.Image | None], cell_px: int = 64,
                background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Draw each row's square thumbnail in its cell; ``thumbnail(row)`` may return None (cell left blank)."""
    side = max(layout.side, 1)
    canvas = Image.new("RGB", (side * cell_px, side * cell_px), background)
    for row, (i, j) in zip(layout.rows, layout.cells):
        thumb = thumbnail(int(row))
        if thumb is not None:
            if thumb.size != (cell_px, cell_px):
                thumb = thumb.resize((cell_px, cell_px), Image.Resampling.LANCZOS)
            canvas.paste(thumb, (int(j) * cell_px, int(i) * cell_px))
    return canvas


def place_by_neighbors(neighbor_rows: np.ndarray, neighbor_distances: np.ndarray, xy: np.ndarray,
                       known: np.ndarray) -> np.ndarray:
    """Positions for new points: the inverse-distance weighted mean of their already placed neighbours.

    ``neighbor_rows`` (m, k) index ``xy``; only rows where ``known`` is True count. A point with no placed
    neighbour goes to the centre of the map. Placed points never move, so the map stays stable as it grows.
    """
    rows = np.asarray(neighbor_rows, dtype=np.int64)
    d = np.asarray(neighbor_distances, dtype=np.float64)
    ok = (rows >= 0) & np.asarray(known, dtype=bool)[np.clip(rows, 0, None)]
    w = np.where(ok, 1.0 / (d + 1e-3), 0.0)
    total = w.sum(axis=1, keepdims=True)
    pts = np.asarray(xy, dtype=np.float64)[np.clip(rows, 0, None)]
    centre = np.asarray(xy, dtype=np.float64)[np.asarray(known, dtype=bool)].mean(axis=0) if np.any(known) \
        else np.zeros(2)
    out = np.where(total > 0, (w[:, :, None] * pts).sum(axis=1) / np.where(total > 0, total, 1.0), centre)
    return out.astype(np.float32)


class SampledMap:
    """The 2-D map of a large collection: t-SNE (:class:`MapBuilder`) on a sample of at most ``sample_size``
    rows, every other row placed among its nearest sampled rows (:func:`place_by_neighbors`).

    Cost is linear in the number of rows beyond the sample; ``sample_rows_`` are the rows t-SNE laid out.
    ``progress`` gets t-SNE's iterations (stage ``"map"``) then the rows placed (stage ``"place"``).
    """

    def __init__(self, sample_size: int = 10_000, n_components: int = 100, neighbors: int = 10,
                 random_state: int = 0, max_iter: int = 1000):
        self.sample_size = sample_size
        self.n_components = n_components
        self.neighbors = neighbors
        self.random_state = random_state
        self.max_iter = max_iter

    def fit(self, pca_coords: np.ndarray, progress: ProgressFn | None = None) -> "SampledMap":
        """Lay out a sample with t-SNE, then place every other row among its nearest sampled rows."""
        x = np.asarray(pca_coords, dtype=np.float32)
        n = len(x)
        self.n_components_ = int(min(self.n_components, x.shape[1]))
        x = np.ascontiguousarray(x[:, :self.n_components_])
        rows = np.arange(n)
        if n > self.sample_size:
            rows = np.sort(np.random.default_rng(self.random_state).choice(n, self.sample_size, replace=False))
        self.sample_rows_ = rows
        inner = MapBuilder(self.n_components_, random_state=self.random_state,
                           max_iter=self.max_iter).fit(x[rows], progress)
        self.perplexity_ = inner.perplexity_
        xy = np.zeros((n, 2), dtype=np.float32)
        xy[rows] = inner.embedding_
        rest = np.setdiff1d(np.arange(n), rows)
        if len(rest):
            import faiss  # the large-collection path only

            ref = np.ascontiguousarray(x[rows])
            lists = int(max(1, min(256, len(rows) // 39)))
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(ref.shape[1]), ref.shape[1], lists)
            index.train(ref)
            index.add(ref)
            index.nprobe = min(8, lists)
            known = np.zeros(n, dtype=bool)
            known[rows] = True
            for start in range(0, len(rest), 65536):
                r = rest[start:start + 65536]
                d2, near = index.search(np.ascontiguousarray(x[r]), self.neighbors)
                near_rows = np.where(near >= 0, rows[np.clip(near, 0, None)], -1)
                xy[r] = place_by_neighbors(near_rows, np.sqrt(np.maximum(d2, 0)), xy, known)
                if progress:
                    progress("place", start + len(r), len(rest))
        self.embedding_ = xy
        return self
