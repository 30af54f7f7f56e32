"""The optional files of a generation that hold what is known about each image besides its pixels.

``metadata.parquet`` is the :class:`~imgsim.metadata.table.MetadataTable` (row i = image i) and ``keywords/`` its
BM25 index, written only when some image has text beyond its file name (a caption, keywords, a description).
Indexes written before them have neither and still open: a reader checks the files a generation lists and
ignores the others, so adding these needed no new format version. Updating such an index adds them.
"""

from __future__ import annotations

from imgsim.metadata.keywords import KeywordIndex, has_text_metadata
from imgsim.metadata.table import FILE, MetadataTable
from imgsim.store.generations import GenerationWriter, Index

#: The folder of the keyword index inside a generation.
KEYWORDS = "keywords"


def has_metadata(index: Index) -> bool:
    """Whether this generation stores a metadata table (indexes built before imgsim read metadata do not)."""
    return FILE in index.meta.get("files", {})


def load_metadata(index: Index) -> MetadataTable | None:
    """The generation's metadata table, checked against its row count; None when it has none."""
    if not has_metadata(index):
        return None
    return MetadataTable.load(index.directory / index.generation, index.count)


def load_keywords(index: Index) -> KeywordIndex | None:
    """The generation's keyword index (memory-mapped); None when its images have no text to search."""
    if f"{KEYWORDS}/keywords.json" not in index.meta.get("files", {}):
        return None
    return KeywordIndex.load(index.directory / index.generation / KEYWORDS, index.count)


def save_metadata(writer: GenerationWriter, table: MetadataTable) -> dict:
    """Store ``table`` (and, when it has text, its keyword index) with the generation being written; returns
    what the generation's ``meta.json`` records about them."""
    if len(table) != writer.count:
        raise ValueError(f"a metadata table of {len(table)} rows for {writer.count} vectors")
    writer.save_file(FILE, table.write)
    text = has_text_metadata(table)
    if text:
        keywords = KeywordIndex.from_table(table)
        writer.save_file(KEYWORDS, keywords.save)
    return {"fields": len(table.kinds), "keywords": text}
