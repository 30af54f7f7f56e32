"""Keyword search: BM25 (the ``bm25s`` library) over each image's metadata text.

An image's text is its file name (stem) and folder names, its description and keywords, and every text
or list column of the sidecar (captions, tags). English stopwords are dropped; there is no stemming.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import bm25s
import numpy as np

from imgsim.metadata.fields import BUILTIN, Kind, MetadataError
from imgsim.metadata.table import MetadataFormatError, MetadataTable

#: Longest keyword query accepted (queries come from URLs too).
MAX_QUERY_CHARS = 500
#: The built-in fields whose text is searched (sidecar text and list columns always are).
SEARCHED_FIELDS = ("name", "folder", "description", "keywords")
_MANIFEST = "keywords.json"
_FORMAT, _VERSION = "imgsim-keywords", 1
_TEXT_KINDS = (Kind.TEXT, Kind.LIST)


def _clean(text: str) -> str:
    # bm25s splits on non-word characters; "_" is a word character, yet file names use it between words.
    return text.replace("_", " ")


def document_texts(table: MetadataTable) -> list[str]:
    """One searchable text per row: name stem, folder names, description, keywords, sidecar text."""
    names = [n for n, k in table.kinds.items() if k in _TEXT_KINDS and (n not in BUILTIN or n in SEARCHED_FIELDS)]
    parts: list[list[str]] = [[] for _ in range(len(table))]
    for name in names:
        for i, value in enumerate(table.column(name).to_pylist()):
            if value is None:
                continue
            if name == "name":
                value = value.rsplit(".", 1)[0]
            elif name == "folder":
                value = value.replace("/", " ")
            parts[i].append(" ".join(value) if isinstance(value, list) else value)
    return [_clean(" ".join(p)) for p in parts]


def has_text_metadata(table: MetadataTable) -> bool:
    """True when some image has text beyond its file and folder names (a description, keywords, a caption)."""
    return any(f.count and f.kind in _TEXT_KINDS and (f.name not in BUILTIN or f.name in ("description", "keywords"))
               for f in table.fields())


def _tokens(text: str) -> list[str]:
    return bm25s.tokenize(_clean(text), stopwords="en", return_ids=False, show_progress=False)[0]


class KeywordIndex:
    """BM25 over one text per image, rows aligned with the index; ``fit`` returns self."""

    def __init__(self, k1: float = 1.5, b: float = 0.75):
        self.k1, self.b = k1, b

    @classmethod
    def from_table(cls, table: MetadataTable) -> KeywordIndex:
        """The keyword index of a metadata table's text."""
        return cls().fit(document_texts(table))

    def fit(self, texts: Sequence[str]) -> KeywordIndex:
        """Index the texts (row i = image i)."""
        self.count_ = len(texts)
        corpus = bm25s.tokenize([_clean(t) for t in texts], stopwords="en", show_progress=False)
        self.retriever_: bm25s.BM25 | None = None
        if corpus.vocab:  # bm25s cannot index a corpus without a single word
            self.retriever_ = bm25s.BM25(k1=self.k1, b=self.b)
            self.retriever_.index(corpus, show_progress=False)
        return self

    def search(self, text: str, k: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``k`` rows whose text matches, best first, with their BM25 scores; ``mask`` filters first."""
        if len(text) > MAX_QUERY_CHARS:
            raise MetadataError(f"a keyword query is at most {MAX_QUERY_CHARS} characters, not {len(text):,}")
        k = max(0, min(int(k), self.count_))
        tokens = _tokens(text)
        if self.retriever_ is None or not tokens or k == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        scores = np.asarray(self.retriever_.get_scores(tokens), dtype=np.float64)
        if mask is not None:
            scores = np.where(mask, scores, 0.0)
        hits = np.flatnonzero(scores > 0)
        if len(hits) > k:
            hits = hits[np.argpartition(-scores[hits], k - 1)[:k]]
        hits = hits[np.lexsort((hits, -scores[hits]))]  # best first; ties by row, so results are repeatable
        return hits.astype(np.int64), scores[hits]

    def save(self, directory: str | os.PathLike) -> None:
        """Write the index into ``directory`` (a fresh folder, e.g. inside a generation being written)."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        if self.retriever_ is not None:
            self.retriever_.save(str(path), show_progress=False)
        manifest = {"format": _FORMAT, "version": _VERSION, "count": self.count_, "k1": self.k1, "b": self.b,
                    "empty": self.retriever_ is None}
        (path / _MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | os.PathLike, count: int | None = None) -> KeywordIndex:
        """Read an index written by :meth:`save` (memory-mapped), checking its format and row ``count``."""
        path = Path(directory)
        rebuild = "Rebuild the index with `python -m imgsim index SRC_DIR --index INDEX_DIR --rebuild`."
        try:
            manifest = json.loads((path / _MANIFEST).read_text(encoding="utf-8"))
            fmt, version, rows = manifest["format"], manifest["version"], manifest["count"]
            index = cls(manifest["k1"], manifest["b"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MetadataFormatError(f"The keyword index in {path} is missing or damaged ({exc}). {rebuild}") from None
        if fmt != _FORMAT or not isinstance(version, int) or version > _VERSION:
            raise MetadataFormatError(f"The keyword index in {path} is format {fmt} {version}; this imgsim reads "
                                      f"{_FORMAT} {_VERSION} and older. {rebuild}")
        if count is not None and rows != count:
            raise MetadataFormatError(f"The keyword index in {path} has {rows} rows for an index of {count}. {rebuild}")
        index.count_, index.retriever_ = rows, None
        if not manifest.get("empty"):
            try:
                index.retriever_ = bm25s.BM25.load(str(path), mmap=True)
            except (OSError, ValueError, KeyError) as exc:
                raise MetadataFormatError(f"The keyword index in {path} is damaged ({exc}). {rebuild}") from None
        return index
