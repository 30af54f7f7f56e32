"""Thumbnails of collection images, and the grid they are laid out in (a fixed number to a line)."""

from __future__ import annotations

import re
from typing import Callable, Iterable, TypeVar

import streamlit as st

from dashboard import cached
from imgsim.collection import Collection

T = TypeVar("T")
PER_ROW = 8
#: Where a long file name may break: after '/', '_', '-', and '.' not before a digit (a distance "0.123" stays whole).
_BREAKS = re.compile(r"([/_\-]|\.(?!\d))")
ZWSP = "\u200b"


def breakable(caption: str) -> str:
    """``caption`` with a zero-width space after each place a name may break, so that a narrow column wraps
    "holiday_0423.jpg" at '_' and never mid-word (the text reads and copies the same, bar those spaces)."""
    return _BREAKS.sub(lambda m: m.group(1) + ZWSP, caption)


def thumb(col: Collection, row: int, size: int = 256, square: str | None = None) -> bytes | None:
    """A JPEG thumbnail of one row's image (None when its file is gone)."""
    entry = col.index.entries[row]
    return cached.thumb_bytes(str(col.image_path(row)), entry.mtime_ns, size, square)


def image_or_placeholder(data: bytes | None) -> None:
    """An image, or the placeholder when its file is unavailable."""
    st.image(data or cached.placeholder(), width="stretch")


def show_image(data: bytes | None, caption: str) -> None:
    """An image and its caption, which says so when the file is unavailable."""
    image_or_placeholder(data)
    st.caption(caption if data else f"{caption} (image file unavailable)")


def in_rows(items: Iterable[T], draw: Callable[[T], None], per_row: int = PER_ROW, columns: int | None = None) -> None:
    """``draw`` each item in a column of its own, ``per_row`` to a line of ``columns`` columns (default as many)."""
    items = list(items)
    for start in range(0, len(items), per_row):
        for c, item in zip(st.columns(columns or per_row), items[start:start + per_row]):
            with c:
                draw(item)


def image_rows(col: Collection, rows: Iterable[int], caption: Callable[[int], str], limit: int | None = None,
               columns: int | None = None) -> None:
    """Thumbnails of ``rows`` (the first ``limit``), eight to a line, each with its caption (:func:`breakable`:
    eight to a line leaves a name too little room to stay on one)."""
    in_rows([int(r) for r in list(rows)[:limit]],
            lambda row: show_image(thumb(col, row, 160, square="pad"), breakable(caption(row))), columns=columns)
