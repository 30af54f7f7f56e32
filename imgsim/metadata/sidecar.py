"""A user's metadata file: CSV or JSON Lines keyed by ``path`` (relative to the collection), types inferred.

Every column but ``path`` is kept under its own name. A column's kind is inferred from all its values:
whole numbers -> int, numbers -> float, ISO 8601 dates -> date, JSON lists -> list, anything else -> text.
Empty cells and JSON nulls are missing values. Problems are values of the result, not log lines.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from imgsim.metadata.fields import BUILTIN, Kind, MetadataError, iso_text

PATH = "path"
_INT = re.compile(r"[+-]?(0|[1-9]\d*)")  # a leading zero ("02134", "007") is an identifier: kept as text
_FLOAT = re.compile(r"[+-]?((0|[1-9]\d*)(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_INT64 = 2**63


class SidecarError(MetadataError):
    """The sidecar file cannot be read; the message names the file and the line."""


@dataclass(frozen=True)
class Sidecar:
    """The sidecar's rows by path, each column's kind, and what was not used."""

    source: str
    rows: dict[str, dict[str, object]]  # path -> {column: typed value}, missing values left out
    kinds: dict[str, Kind]  # the columns kept, in file order
    clashes: tuple[str, ...] = ()  # columns named like a built-in field: not used (rename them)
    duplicates: tuple[str, ...] = ()  # paths given more than once: the last row wins
    no_path: int = 0  # rows with an empty path: not used


def read_sidecar(file: str | os.PathLike) -> Sidecar:
    """Read a ``.csv`` or ``.jsonl`` sidecar (by its extension) and infer each column's kind."""
    path = Path(file)
    try:
        if path.suffix.lower() == ".csv":
            records = _csv_records(path)
        elif path.suffix.lower() in (".jsonl", ".ndjson"):
            records = _jsonl_records(path)
        else:
            raise SidecarError(f"{path.name}: a metadata file is .csv or .jsonl (JSON Lines), "
                               f"not {path.suffix or 'no extension'}.")
    except OSError as exc:
        raise SidecarError(f"Cannot read the metadata file {path.name}: {exc.strerror or exc}.") from None
    except UnicodeDecodeError as exc:
        raise SidecarError(f"{path.name} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                           f"save it as UTF-8.") from None
    return _typed(path.name, records)


def _csv_records(path: Path) -> list[tuple[int, dict[str, object]]]:
    """(line, row) pairs of a CSV file with a header line; every cell is text."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise SidecarError(f"{path.name} is empty: it needs a header line with a '{PATH}' column.")
        header = [h.strip() for h in header]
        _check_header(path.name, header)
        records = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(header):
                raise SidecarError(f"{path.name} line {reader.line_num}: {len(row)} cells for {len(header)} columns.")
            records.append((reader.line_num, dict(zip(header, row))))
    return records


def _check_header(name: str, header: list[str]) -> None:
    if PATH not in header:
        raise SidecarError(f"{name} has no '{PATH}' column (columns: {', '.join(header) or 'none'}); "
                           f"add one with each image's path relative to the folder.")
    if "" in header:
        raise SidecarError(f"{name}: column {header.index('') + 1} has no name.")
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise SidecarError(f"{name}: column {repeated[0]!r} appears more than once.")


def _jsonl_records(path: Path) -> list[tuple[int, dict[str, object]]]:
    """(line, object) pairs of a JSON Lines file; blank lines are allowed."""
    records = []
    with open(path, encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line, parse_constant=_no_constant)
            except ValueError as exc:
                raise SidecarError(f"{path.name} line {number} is not JSON ({exc}).") from None
            if not isinstance(value, dict):
                raise SidecarError(f"{path.name} line {number} is not a JSON object: each line describes one image.")
            if PATH not in value:
                raise SidecarError(f"{path.name} line {number} has no '{PATH}' key.")
            records.append((number, value))
    return records


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def _normalize_path(text: str) -> str:
    """A sidecar path as the index writes it: forward slashes, no leading ``./``."""
    text = text.strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def _typed(source: str, records: list[tuple[int, dict[str, object]]]) -> Sidecar:
    """Rows keyed by path with typed values; clashing columns left out."""
    names: dict[str, None] = {}
    for _, record in records:
        names.update(dict.fromkeys(k for k in record if k != PATH))
    clashes = tuple(n for n in names if n in BUILTIN)
    columns = [n for n in names if n not in BUILTIN]
    by_path: dict[str, dict[str, object]] = {}
    duplicates: dict[str, None] = {}
    no_path = 0
    for line, record in records:
        key = record[PATH]
        if not isinstance(key, str):
            raise SidecarError(f"{source} line {line}: '{PATH}' is {json.dumps(key)}, not text.")
        key = _normalize_path(key)
        if not key:
            no_path += 1
            continue
        if key in by_path:
            duplicates[key] = None
        by_path[key] = record
    kinds: dict[str, Kind] = {}
    rows: dict[str, dict[str, object]] = {p: {} for p in by_path}
    for name in columns:
        present = {p: r[name] for p, r in by_path.items() if not _missing(r.get(name))}
        kind, values = infer_column(list(present.values()))
        kinds[name] = kind
        for p, value in zip(present, values):
            if value is not None:  # a list of empty items
                rows[p][name] = value
    return Sidecar(source, rows, kinds, clashes, tuple(duplicates), no_path)


def _missing(value: object) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or value == []


def infer_column(values: list[object]) -> tuple[Kind, list[object]]:
    """The kind of a column (from its present values) and the values converted to it."""
    if values and all(_as_int(v) is not None for v in values):
        return Kind.INT, [_as_int(v) for v in values]
    if values and all(_as_float(v) is not None for v in values):
        return Kind.FLOAT, [_as_float(v) for v in values]
    if values and all(isinstance(v, str) and iso_text(v.strip()) for v in values):
        return Kind.DATE, [iso_text(v.strip()) for v in values]
    if values and all(isinstance(v, list) and all(_scalar(x) for x in v) for v in values):
        return Kind.LIST, [[_as_text(x) for x in v if not _missing(x)] or None for v in values]
    return Kind.TEXT, [_as_text(v) for v in values]


def _scalar(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float))


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else None
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        number = int(value)
        return number if -_INT64 <= number < _INT64 else None
    return None


def _as_float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) else None


def _as_text(value: object) -> str:
    """Any JSON value as text: strings stripped, booleans as true/false, lists and objects as JSON."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)
