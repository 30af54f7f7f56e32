"""CSV exports: the names in them are data, never spreadsheet formulas."""

from __future__ import annotations

import csv
import io

import numpy as np

from imgsim.serving import export
from imgsim.analysis.duplicates import DuplicateGroup
from imgsim.analysis.outliers import Outlier

#: File and folder names a spreadsheet would run as formulas (OWASP "CSV injection").
FORMULAS = ["=HYPERLINK(\"https:evil.example\",\"open\").jpg", "+1+cmd.jpg", "-2+3.jpg", "@SUM(A1).jpg",
            "\tx.jpg"]


def cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_names_that_start_like_formulas_are_written_as_text():
    paths = FORMULAS + ["=evil/a.jpg", "reds/r1.jpg"]
    labels = [""] * len(FORMULAS) + ["=evil", "reds"]
    rows = range(len(paths))
    groups = [DuplicateGroup(tuple(rows), tuple(0.0 for _ in rows))]
    outliers = [Outlier(rank=r + 1, row=r, score=0.5, nearest=0.4) for r in rows]
    tables = [cells(export.selection_csv(paths, labels, np.zeros((len(paths), 2)), rows)),
              cells(export.groups_csv(paths, groups, 0.1)),
              cells(export.clusters_csv(paths, np.zeros(len(paths), int), np.zeros(len(paths)))),
              cells(export.outliers_csv(paths, outliers))]
    for table in tables:
        column = table[0].index("path")
        assert [row[column] for row in table[1:]] == ["'" + p for p in paths[:-1]] + ["reds/r1.jpg"]
    assert [row[1] for row in tables[0][1:]] == [""] * len(FORMULAS) + ["'=evil", "reds"]
