"""The per-image metadata table: one column per field, row i = image i of the index, Parquet on disk.

Columns are Arrow arrays (text, int64, float64, ISO date text, list of text); a missing value is a null.
The file carries a format name, a version and every column's kind, and is replaced atomically on write.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from imgsim.metadata.fields import BUILTIN, Kind, MetadataError
from imgsim.metadata.sidecar import Sidecar
from imgsim.store.generations import fsync

FILE = "metadata.parquet"
FORMAT = "imgsim-metadata"
VERSION = 1
_SCHEMA_KEY = b"imgsim"
ARROW_TYPES: dict[Kind, pa.DataType] = {
    Kind.TEXT: pa.string(),
    Kind.INT: pa.int64(),
    Kind.FLOAT: pa.float64(),
    Kind.DATE: pa.string(),
    Kind.LIST: pa.list_(pa.string()),
}


class MetadataFormatError(MetadataError):
    """The metadata file is missing, damaged, inconsistent with the index, or from a newer imgsim."""


@dataclass(frozen=True)
class FieldInfo:
    """One field of the table: its name, kind and how many images have a value for it."""

    name: str
    kind: Kind
    count: int

    def to_json(self) -> dict:
        """The field as ``info --json`` lists it."""
        return {"name": self.name, "type": self.kind.value, "count": self.count}


class MetadataTable:
    """Columnar metadata aligned with the index's rows; immutable (every change returns a new table)."""

    def __init__(self, columns: Mapping[str, pa.Array], kinds: Mapping[str, Kind]):
        if set(columns) != set(kinds):
            raise ValueError("every column needs a kind, and every kind a column")
        lengths = {len(c) for c in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        self._kinds = dict(kinds)
        self._columns = {name: columns[name] for name in kinds}
        self._count = lengths.pop() if lengths else 0
        self._timestamps: dict[str, pa.Array] = {}

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, object]], kinds: Mapping[str, Kind] = BUILTIN) -> MetadataTable:
        """A table from one mapping per image (e.g. ``read_file_metadata(...).values``); absent keys are null."""
        columns = {name: pa.array([r.get(name) for r in rows], type=ARROW_TYPES[kind]) for name, kind in kinds.items()}
        return cls(columns, kinds)

    @classmethod
    def assemble(cls, sources: Sequence[int | Mapping[str, object]], old: MetadataTable | None = None) -> MetadataTable:
        """Row i is ``old`` row ``sources[i]`` (an int) or a fresh row (a mapping): an incremental update in one pass.

        ``sources`` is the build's list of (old row | new vector) per new row, with new vectors replaced by
        their files' metadata. Columns only ``old`` has (a sidecar's) are null in fresh rows that do not give them.
        """
        base = old if old is not None else cls.from_rows([])
        fresh = cls.from_rows([s for s in sources if not isinstance(s, (int, np.integer))], base.kinds)
        order, added = [], len(base)
        for source in sources:
            if isinstance(source, (int, np.integer)):
                if not 0 <= source < len(base):
                    raise IndexError(f"row {source} of a metadata table with {len(base)} rows")
                order.append(int(source))
            else:
                order.append(added)
                added += 1
        return base._concat(fresh).take(order)

    def update(self, removed: Sequence[int], added: Sequence[Mapping[str, object]]) -> MetadataTable:
        """Drop the ``removed`` rows, then append one row per mapping in ``added``."""
        gone = set(int(r) for r in removed)
        kept: list[int | Mapping[str, object]] = [i for i in range(len(self)) if i not in gone]
        return MetadataTable.assemble(kept + list(added), self)

    def take(self, rows: Sequence[int] | np.ndarray) -> MetadataTable:
        """The table of the given rows, in that order."""
        indices = pa.array(np.asarray(rows, dtype=np.int64))
        return MetadataTable({n: c.take(indices) for n, c in self._columns.items()}, self._kinds)

    def with_sidecar(self, sidecar: Sidecar, paths: Sequence[str]) -> tuple[MetadataTable, list[str]]:
        """This table with the sidecar's columns (replacing any earlier sidecar's), and its unknown paths.

        ``paths`` are the index's relative paths, row by row; sidecar rows for other paths are returned
        (sorted) so that they can be reported, never silently dropped.
        """
        if len(paths) != len(self):
            raise ValueError(f"{len(paths)} paths for a metadata table of {len(self)} rows")
        row_of = {p: i for i, p in enumerate(paths)}
        unknown = sorted(p for p in sidecar.rows if p not in row_of)
        kinds = {n: k for n, k in self._kinds.items() if n in BUILTIN}
        columns = {n: self._columns[n] for n in kinds}
        for name, kind in sidecar.kinds.items():
            values: list[object] = [None] * len(self)
            for path, row in sidecar.rows.items():
                if name in row and path in row_of:
                    values[row_of[path]] = row[name]
            kinds[name] = kind
            columns[name] = pa.array(values, type=ARROW_TYPES[kind])
        return MetadataTable(columns, kinds), unknown

    def _concat(self, other: MetadataTable) -> MetadataTable:
        """The rows of ``self`` then ``other``; a column one of them lacks is null there."""
        kinds = dict(self._kinds)
        for name, kind in other._kinds.items():
            if kinds.setdefault(name, kind) != kind:
                raise ValueError(f"field {name!r} is {kinds[name]} in one table and {kind} in the other")
        columns = {}
        for name, kind in kinds.items():
            parts = [t._columns.get(name, pa.nulls(len(t), ARROW_TYPES[kind])) for t in (self, other)]
            columns[name] = pa.concat_arrays(parts)
        return MetadataTable(columns, kinds)

    def __len__(self) -> int:
        return self._count

    def equals(self, other: MetadataTable | None) -> bool:
        """True when ``other`` has the same fields, kinds and values, row by row."""
        return (other is not None and self._kinds == other._kinds and len(self) == len(other)
                and all(c.equals(other._columns[n]) for n, c in self._columns.items()))

    @property
    def kinds(self) -> dict[str, Kind]:
        """Every field's kind, built-in fields first."""
        return dict(self._kinds)

    def column(self, name: str) -> pa.Array:
        """One field's values, row by row (nulls where unknown)."""
        return self._columns[name]

    def timestamps(self, name: str) -> pa.Array:
        """A date field as wall-clock times to the second (an offset is ignored), for comparisons; cached."""
        if self._kinds[name] != Kind.DATE:
            raise ValueError(f"{name} is {self._kinds[name]}, not a date")
        if name not in self._timestamps:
            # Canonical ISO text: the first 19 characters are the local date and time (a date alone is midnight).
            self._timestamps[name] = pc.cast(pc.utf8_slice_codeunits(self._columns[name], 0, 19), pa.timestamp("s"))
        return self._timestamps[name]

    def values(self, name: str, limit: int = 50) -> list[tuple[object, int]]:
        """A field's most common values with how many images have each, most common first (a list field counts
        each item): what a filter's choice of camera, folder or keyword offers."""
        column = self._columns[name]
        if self._kinds[name] == Kind.LIST:
            column = pc.list_flatten(column)
        counts = pc.value_counts(column.drop_null())
        pairs = zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())
        return sorted(pairs, key=lambda p: (-p[1], str(p[0])))[:limit]

    def span(self, name: str) -> tuple[object, object] | None:
        """The smallest and largest value of a number or date field (dates as ISO text); None when none is known."""
        if self._kinds[name] not in (Kind.INT, Kind.FLOAT, Kind.DATE):
            raise ValueError(f"{name} is {self._kinds[name]}: it has no range")
        column = self.timestamps(name) if self._kinds[name] == Kind.DATE else self._columns[name]
        low, high = pc.min_max(column).values()
        if not low.is_valid:
            return None
        if self._kinds[name] == Kind.DATE:
            return low.as_py().isoformat(), high.as_py().isoformat()
        return low.as_py(), high.as_py()

    def fields(self) -> list[FieldInfo]:
        """Every field with its kind and how many images have a value for it."""
        return [FieldInfo(n, k, len(self) - self._columns[n].null_count) for n, k in self._kinds.items()]

    def rows(self, indices: Sequence[int] | np.ndarray) -> list[dict[str, object]]:
        """The known values of the given rows, one JSON-ready dict each (``"metadata": {...}`` of a result)."""
        part = self.take(indices)
        values = {n: c.to_pylist() for n, c in part._columns.items()}
        return [{n: v[i] for n, v in values.items() if v[i] is not None} for i in range(len(part))]

    def row(self, index: int) -> dict[str, object]:
        """The known values of one row."""
        return self.rows([index])[0]

    def write(self, path: str | os.PathLike) -> None:
        """Write the table as Parquet, atomically: a crash leaves the previous file or none, never half of one."""
        path = Path(path)
        schema_meta = {_SCHEMA_KEY: json.dumps({"format": FORMAT, "version": VERSION,
                                                "kinds": {n: k.value for n, k in self._kinds.items()}}).encode()}
        table = pa.table(self._columns, schema=pa.schema(
            [pa.field(n, ARROW_TYPES[k]) for n, k in self._kinds.items()], metadata=schema_meta))
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        try:
            pq.write_table(table, tmp, compression="zstd")
            fsync(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        fsync(path.parent)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the table as ``directory/metadata.parquet``; returns that path."""
        path = Path(directory) / FILE
        self.write(path)
        return path

    @classmethod
    def read(cls, path: str | os.PathLike, count: int | None = None) -> MetadataTable:
        """Read a table written by :meth:`write`, checking its format, version, kinds and row ``count``."""
        path = Path(path)
        rebuild = "Rebuild the index with `python -m imgsim index SRC_DIR --index INDEX_DIR --rebuild`."
        try:
            table = pq.read_table(path)
        except FileNotFoundError:
            raise MetadataFormatError(f"The metadata file {path} is missing. {rebuild}") from None
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise MetadataFormatError(f"The metadata file {path} is damaged ({exc}). {rebuild}") from None
        try:
            meta = json.loads((table.schema.metadata or {})[_SCHEMA_KEY])
            kinds = {n: Kind(k) for n, k in meta["kinds"].items()}
            fmt, version = meta["format"], meta["version"]
        except (KeyError, TypeError, ValueError):
            raise MetadataFormatError(f"{path} is not an imgsim metadata table. {rebuild}") from None
        if fmt != FORMAT or not isinstance(version, int):
            raise MetadataFormatError(f"{path} is not an imgsim metadata table. {rebuild}")
        if version > VERSION:
            raise MetadataFormatError(f"{path} was written by a newer imgsim (metadata format {version}); this imgsim "
                                      f"reads format {VERSION} and older. Upgrade imgsim "
                                      f"(pip install -U -r requirements.txt).")
        if table.column_names != list(kinds) or not all(
                table.schema.field(n).type == ARROW_TYPES[k] for n, k in kinds.items()):
            raise MetadataFormatError(f"{path} has columns that do not match its recorded kinds. {rebuild}")
        if count is not None and table.num_rows != count:
            raise MetadataFormatError(f"{path} has {table.num_rows} rows for an index of {count} images. {rebuild}")
        return cls({n: table.column(n).combine_chunks() for n in kinds}, kinds)

    @classmethod
    def load(cls, directory: str | os.PathLike, count: int | None = None) -> MetadataTable:
        """Read ``directory/metadata.parquet`` (see :meth:`read`)."""
        return cls.read(Path(directory) / FILE, count)

