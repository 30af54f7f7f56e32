"""Search methods behind one interface: what answers "which images are nearest", and the data each method
derives, updates, opens and describes for a generation of the index.

Methods are named by strings and imported on use (:data:`METHODS`), so this module never imports an
implementation: ``exact`` (:mod:`imgsim.search.exact`: the reference answer, pruned by PCA bounds) and ``ann``
(:mod:`imgsim.search.ann` answers, :mod:`imgsim.search.ann_build` derives; for large collections).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from imgsim.errors import ImgsimError
from imgsim.progress import ProgressFn

if TYPE_CHECKING:
    from imgsim.store.generations import GenerationWriter, Index

#: Method name -> ``module:attribute`` of its :class:`SearchMethod`, imported when first asked for.
METHODS = {"exact": "imgsim.search.exact:ExactMethod", "ann": "imgsim.search.ann_build:AnnMethod"}
#: Above this many images an index uses approximate search unless told otherwise.
ANN_THRESHOLD = 50_000
#: Neighbours stored per image: enough for the duplicate histogram and the quality check.
GRAPH_K = 10
#: recall@10 on queries not in the index that approximate search is tuned to keep (``index --recall``).
RECALL_TARGET = 0.95


@dataclass(frozen=True)
class Neighbors:
    """Neighbours of one or more queries, nearest first: ``indices`` and Euclidean ``distances`` (m, k)."""

    indices: np.ndarray
    distances: np.ndarray

    @property
    def similarities(self) -> np.ndarray:
        """Cosine similarity, from ``d^2 = 2 - 2 cos`` on unit vectors."""
        return 1.0 - self.distances ** 2 / 2.0


def cosine_from_distance(distance: np.ndarray | float) -> np.ndarray | float:
    """Cosine similarity of two unit vectors at Euclidean distance ``distance``."""
    return 1.0 - np.square(distance) / 2.0


class Search(Protocol):
    """An opened search over a generation's unit vectors (Euclidean distance); what its callers ask of it."""

    #: Share of the vectors whose exact distance the last call computed (1.0 would be brute force).
    last_exact_fraction_: float

    @property
    def n(self) -> int:
        """How many vectors it searches."""

    def kneighbors(self, queries: np.ndarray, k: int, prefer: int | None = None,
                   allowed: np.ndarray | None = None) -> Neighbors:
        """The ``k`` nearest rows to each query vector (k clamped); ``prefer`` is a row that wins ties;
        ``allowed`` (a boolean mask over the rows, e.g. a metadata filter) restricts the search to its rows."""

    def kneighbors_rows(self, rows: np.ndarray, k: int, exclude_self: bool = True) -> Neighbors:
        """Neighbours of indexed rows, from their stored vectors; each row itself excluded by default."""

    def pairs_within(self, threshold: float, limit: int | None = None, allowed: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs ``i < j`` at distance ``<= threshold``: arrays ``(i, j, distance)`` in ``(i, j)`` order; with
        ``limit``, only the first ``limit`` of them (the search stops early); with ``allowed`` (a row mask), only
        pairs of allowed rows (counted towards the limit)."""


class SearchMethod(Protocol):
    """One search method's part in the life of a generation: derive, update, open and describe its data."""

    name: str
    #: Files besides arrays that each generation of this method holds (kept when the vectors are).
    files: tuple[str, ...]

    def derive(self, writer: GenerationWriter, progress: ProgressFn, chosen: str,
               target: float | None = None) -> dict:
        """Every derived array for the vectors being written, from scratch; returns the metadata to record.
        ``target``: the recall@10 an approximate method is tuned for (default :data:`RECALL_TARGET`)."""

    def update(self, writer: GenerationWriter, progress: ProgressFn, chosen: str, old: Index,
               sources: list, target: float | None = None) -> dict:
        """The same from the previous generation ``old`` (``sources[i]``: the old row new row ``i`` keeps,
        else a new vector), reusing what the method can; ``target`` defaults to the one ``old`` records."""

    def open(self, index: Index) -> Search:
        """The search of a loaded generation built by this method."""

    def describe(self, info: dict, *, short: bool = False) -> str:
        """How neighbours are found and how well, from the recorded ``info``: a sentence for people, or
        (``short``) the summary that ``imgsim info`` prints."""


def _known(name: str) -> str:
    """``name`` when it is one of :data:`METHODS`; else a message that lists them."""
    if name not in METHODS:
        raise ImgsimError(f"Unknown search method '{name}': use one of {', '.join(METHODS)}.")
    return name


def search_method(name: str) -> SearchMethod:
    """The search method called ``name`` (one of :data:`METHODS`), imported now."""
    module, _, attribute = METHODS[_known(name)].partition(":")
    return getattr(importlib.import_module(module), attribute)()


def recorded_method(meta: dict) -> str:
    """The search method a generation's metadata records (``exact`` for indexes older than the choice)."""
    return (meta.get("search") or {}).get("method", "exact")


def choose_method(asked: str | None, old_meta: dict | None, count: int) -> tuple[str, str]:
    """(method, how it was chosen): ``asked`` wins, then an earlier explicit choice, else the size threshold."""
    if asked is not None:
        return _known(asked), "asked"
    search = (old_meta or {}).get("search") or {}
    if search.get("chosen") == "asked":
        return search.get("asked", search["method"]), "asked"  # "asked": ann asked on an empty collection
    return ("ann" if count > ANN_THRESHOLD else "exact"), "auto"


def retune_asked(meta: dict, target: float | None) -> bool:
    """Whether recall ``target`` asks a generation for new tuning: its approximate search was tuned for another
    target (or, built before tuning, for none). Exact search has nothing to tune."""
    search = meta.get("search") or {}
    return target is not None and recorded_method(meta) != "exact" and search.get("target") != target


def open_search(index: Index) -> Search:
    """The search a loaded generation answers queries with, by the method it records."""
    return search_method(recorded_method(index.meta)).open(index)


def describe(info: dict, *, short: bool = False) -> str:
    """How the recorded search method ``info`` finds neighbours (see :meth:`SearchMethod.describe`)."""
    return search_method(info["method"]).describe(info, short=short)
