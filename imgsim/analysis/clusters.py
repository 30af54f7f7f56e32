"""Clusters (album organisation): k-means on the stored PCA projections, a suggested k, and folders per cluster.

k-means runs on the PCA coordinates the index already stores (a few hundred values per image), not on the
100,352-value vectors: distances between projections approximate distances between vectors, and the
whole collection fits in memory. ``organise`` lays the images out in one sub-folder per cluster by
symlink or copy; it never moves, renames or deletes an original.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from imgsim.errors import ImgsimError

# Above this many images, MiniBatchKMeans: full k-means' cost per iteration grows with n x k x dims.
MINIBATCH_ABOVE = 10_000


class UnsafeOutput(ImgsimError):
    """An --out folder that could endanger the originals or mix with other files."""


class ClusterModel:
    """k-means (``MiniBatchKMeans`` above ``minibatch_above`` rows) on PCA coordinates.

    ``k_`` is the number of clusters actually used (k clamped to [1, n]); ``labels_`` the cluster of each
    row, ``distances_`` each row's Euclidean distance to its cluster centre, ``centers_`` and ``sizes_``.
    Clusters are numbered largest first.
    """

    def __init__(self, k: int = 8, random_state: int = 0, minibatch_above: int = MINIBATCH_ABOVE):
        self.k = k
        self.random_state = random_state
        self.minibatch_above = minibatch_above

    def fit(self, coords: np.ndarray) -> "ClusterModel":
        x = np.asarray(coords, dtype=np.float32)
        x = x.reshape(len(x), -1) if x.ndim != 2 else x
        n = len(x)
        self.k_ = int(max(1, min(int(self.k), n))) if n else 0
        if n == 0:
            self.labels_ = np.zeros(0, np.int64)
            self.centers_ = np.zeros((0, x.shape[1]), np.float32)
        elif self.k_ == 1 or x.shape[1] == 0:
            self.k_ = 1
            self.labels_ = np.zeros(n, np.int64)
            self.centers_ = x.mean(axis=0, keepdims=True)
        else:
            from sklearn.cluster import KMeans, MiniBatchKMeans  # on use: browsing never pays for it

            if n > self.minibatch_above:
                # One initialisation on batches of 1,024: 2.5x faster than three on 4,096 at N = 50,000.
                km = MiniBatchKMeans(n_clusters=self.k_, random_state=self.random_state, n_init=1,
                                     batch_size=1024)
            else:
                km = KMeans(n_clusters=self.k_, random_state=self.random_state, n_init="auto")
            km.fit(x)
            self.labels_ = km.labels_.astype(np.int64)
            self.centers_ = km.cluster_centers_.astype(np.float32)
        self.method_ = "minibatch-kmeans" if n > self.minibatch_above else "kmeans"
        # Renumber largest first (ties: lowest first row) so that cluster 0 is the biggest album.
        sizes = np.bincount(self.labels_, minlength=self.k_)
        first = np.array([np.flatnonzero(self.labels_ == c)[0] if sizes[c] else n for c in range(self.k_)],
                         dtype=np.int64)
        order = np.lexsort((first, -sizes))
        remap = np.empty(self.k_, np.int64)
        remap[order] = np.arange(self.k_)
        self.labels_ = remap[self.labels_] if n else self.labels_
        self.centers_ = self.centers_[order]
        self.sizes_ = sizes[order]
        self.distances_ = (np.linalg.norm(x - self.centers_[self.labels_], axis=1) if n
                           else np.zeros(0, np.float32))
        return self

    def members(self, cluster: int) -> np.ndarray:
        """Rows of one cluster, nearest to its centre first."""
        rows = np.flatnonzero(self.labels_ == cluster)
        return rows[np.lexsort((rows, self.distances_[rows]))]

    def central(self, cluster: int, m: int = 5) -> np.ndarray:
        """The ``m`` rows nearest to the cluster's centre (its most typical images)."""
        return self.members(cluster)[:m]


@dataclass(frozen=True)
class SuggestedK:
    """The k with the best silhouette score on a sample, and every score computed."""

    k: int
    scores: dict[int, float] = field(default_factory=dict)
    sample_size: int = 0


def suggest_k(coords: np.ndarray, k_min: int = 2, k_max: int = 12, sample_size: int = 2000,
              random_state: int = 0) -> SuggestedK:
    """Best silhouette score over k in [k_min, k_max] (clamped to what the sample allows), on a sample."""
    x = np.asarray(coords, dtype=np.float32)
    x = x.reshape(len(x), -1) if x.ndim != 2 else x
    n = len(x)
    if n > sample_size:
        x = x[np.sort(np.random.default_rng(random_state).choice(n, sample_size, replace=False))]
    hi = min(k_max, len(x) - 1)
    if hi < max(2, k_min):
        return SuggestedK(1 if n else 0, {}, len(x))
    from sklearn.metrics import silhouette_score

    scores = {}
    for k in range(max(2, k_min), hi + 1):
        labels = ClusterModel(k, random_state=random_state).fit(x).labels_
        if len(np.unique(labels)) < 2:
            continue
        scores[k] = float(silhouette_score(x, labels, random_state=random_state))
    if not scores:
        return SuggestedK(1, {}, len(x))
    best = max(scores, key=lambda k: (scores[k], -k))
    return SuggestedK(best, scores, len(x))


@dataclass(frozen=True)
class OrganiseReport:
    """What :func:`organise` made: one folder per cluster and how many files went in."""

    out: Path
    mode: str
    folders: list[str]
    files: int


def cluster_folder(cluster: int, k: int) -> str:
    """The sub-folder name of a cluster (1-based, zero-padded so that folders sort in cluster order)."""
    return f"cluster-{cluster + 1:0{len(str(max(k, 1)))}d}"


def check_output(out: str | os.PathLike, source: str | os.PathLike) -> Path:
    """The resolved --out folder, or :class:`UnsafeOutput` when it is inside the source folder or not empty."""
    out_path = Path(os.path.realpath(Path(out).expanduser()))
    src = Path(os.path.realpath(Path(source).expanduser()))
    if out_path == src or src in out_path.parents:
        raise UnsafeOutput(f"Refusing --out {out}: it is inside the image folder {src}. "
                           "Choose a folder outside it, so the originals are never touched.")
    if out_path.exists() and (not out_path.is_dir() or any(out_path.iterdir())):
        raise UnsafeOutput(f"Refusing --out {out}: it is not an empty folder. Choose a new or empty folder.")
    return out_path


def organise(paths: Sequence[str], labels: np.ndarray, k: int, source: str | os.PathLike,
             out: str | os.PathLike, mode: str = "link") -> OrganiseReport:
    """Lay the images out under ``out`` in one sub-folder per cluster, by symlink (``link``) or ``copy``.

    Originals are only read: never moved, renamed or deleted. A file's name in its cluster folder is its
    relative path with ``/`` replaced by ``__``, so two ``001.jpg`` from different folders do not clash
    (a name that still clashes, ``a/b.jpg`` and ``a__b.jpg``, gets `` (2)`` before its extension).
    """
    if mode not in ("link", "copy"):
        raise ImgsimError(f"Unknown mode '{mode}': use link or copy.")
    out_path = check_output(out, source)
    src = Path(os.path.realpath(Path(source).expanduser()))
    out_path.mkdir(parents=True, exist_ok=True)
    folders = [cluster_folder(c, k) for c in range(k)]
    for name in folders:
        (out_path / name).mkdir(exist_ok=True)
    files = 0
    taken: set[tuple[int, str]] = set()
    for rel, label in zip(paths, np.asarray(labels)):
        original = src / rel
        name = rel.replace("/", "__")
        stem, ext = os.path.splitext(name)
        copy = 1
        while (int(label), name) in taken:  # "a/b.jpg" and "a__b.jpg" flatten to the same name
            copy += 1
            name = f"{stem} ({copy}){ext}"
        taken.add((int(label), name))
        target = out_path / folders[int(label)] / name
        if mode == "link":
            os.symlink(original, target)
        else:
            shutil.copy2(original, target)
        files += 1
    return OrganiseReport(out_path, mode, folders, files)
