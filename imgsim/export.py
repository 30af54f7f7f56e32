"""CSV exports of what the user found: a selection of images, duplicate groups."""

from __future__ import annotations

import csv
import io
from typing import Sequence

from .duplicates import DuplicateGroup


def _csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def selection_csv(paths: Sequence[str], labels: Sequence[str], xy, rows: Sequence[int]) -> str:
    """The selected images with their sub-folder and map position."""
    return _csv(["path", "folder", "x", "y"],
                [[paths[r], labels[r], f"{xy[r][0]:.4f}", f"{xy[r][1]:.4f}"] for r in rows])


def groups_csv(paths: Sequence[str], groups: Sequence[DuplicateGroup], threshold: float) -> str:
    """One line per image in a duplicate group: group number, path, distance to its nearest group member."""
    return _csv(["group", "path", "nearest_distance", "threshold"],
                [[number, paths[r], f"{d:.6f}", threshold]
                 for number, g in enumerate(groups, start=1) for r, d in zip(g.rows, g.nearest)])
