"""The metadata vocabulary: built-in field names, the kinds of value a field holds, ISO 8601 dates."""

from __future__ import annotations

import enum
import re
from datetime import datetime

from imgsim.errors import ImgsimError


class MetadataError(ImgsimError):
    """Metadata that cannot be used; the message names the file, field or value and what to do."""


class Kind(str, enum.Enum):
    """The kind of value a field holds, which decides how it is filtered and stored."""

    TEXT = "text"
    INT = "int"
    FLOAT = "float"
    DATE = "date"  # ISO 8601 text, compared as a local wall-clock time
    LIST = "list"  # a list of text (keywords, tags)

    def __str__(self) -> str:
        return self.value

    @property
    def is_number(self) -> bool:
        """True for the kinds compared as numbers."""
        return self in (Kind.INT, Kind.FLOAT)


#: Fields read from every file (names used by the CLI, the URL and the JSON), in display order.
BUILTIN: dict[str, Kind] = {
    "folder": Kind.TEXT,
    "name": Kind.TEXT,
    "bytes": Kind.INT,
    "width": Kind.INT,
    "height": Kind.INT,
    "format": Kind.TEXT,
    "taken": Kind.DATE,
    "camera": Kind.TEXT,
    "lens": Kind.TEXT,
    "lat": Kind.FLOAT,
    "lon": Kind.FLOAT,
    "orientation": Kind.INT,
    "keywords": Kind.LIST,
    "description": Kind.TEXT,
}

_ISO = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})?)?")


def parse_iso(text: str) -> datetime | None:
    """A date (``2023-07-01``) or date-time (``2023-07-01T10:22:01+02:00``) in ISO 8601, else None."""
    # The regex first: datetime.fromisoformat also takes forms such as "20230701" that read as numbers.
    if not _ISO.fullmatch(text):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:  # 2023-02-30, 25:00
        return None


def iso_text(text: str) -> str | None:
    """The canonical ISO 8601 form of a date or date-time text (a date stays a date), else None."""
    value = parse_iso(text)
    if value is None:
        return None
    return text if len(text) == 10 else value.isoformat()
