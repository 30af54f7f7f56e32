"""CSV exports of what the user found: a selection of images, duplicate groups (names are data, not formulas)."""

from __future__ import annotations

import csv
import io
from typing import Sequence

from imgsim.analysis.duplicates import DuplicateGroup

#: How a spreadsheet recognises a formula; a name starting so gets an apostrophe (OWASP "CSV injection"),
#: since these files are made to be opened in one and the names come from whoever filled the folders.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _name(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def selection_csv(paths: Sequence[str], labels: Sequence[str], xy, rows: Sequence[int]) -> str:
    """The selected images with their sub-folder and map position."""
    return _csv(["path", "folder", "x", "y"],
                [[_name(paths[r]), _name(labels[r]), f"{xy[r][0]:.4f}", f"{xy[r][1]:.4f}"] for r in rows])


def groups_csv(paths: Sequence[str], groups: Sequence[DuplicateGroup], threshold: float) -> str:
    """One line per image in a duplicate group: group number, path, distance to its nearest group member."""
    return _csv(["group", "path", "nearest_distance", "threshold"],
                [[number, _name(paths[r]), f"{d:.6f}", threshold]
                 for number, g in enumerate(groups, start=1) for r, d in zip(g.rows, g.nearest)])


def clusters_csv(paths: Sequence[str], labels: Sequence[int], distances: Sequence[float]) -> str:
    """One line per image: path, cluster (1-based, as shown) and its distance to the cluster's centre."""
    return _csv(["path", "cluster", "distance_to_centre"],
                [[_name(paths[r]), int(labels[r]) + 1, f"{float(distances[r]):.6f}"] for r in range(len(paths))])


def outliers_csv(paths: Sequence[str], outliers: Sequence) -> str:
    """The odd ones out, oddest first: rank, path, mean distance to the nearest images, nearest distance."""
    return _csv(["rank", "path", "mean_distance_to_nearest", "nearest_distance"],
                [[o.rank, _name(paths[o.row]), f"{o.score:.6f}", f"{o.nearest:.6f}"] for o in outliers])
