"""The Odd ones out tab: the images farthest from their nearest neighbours."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard.components.thumbs import image_rows
from dashboard.fragments import section
from imgsim.collection import Collection
from imgsim.serving import export
from imgsim.serving.policy import plain


def render(col: Collection, index_dir: Path, generation: str) -> None:
    """The odd ones out, most unusual first."""
    outliers(index_dir, generation)


@section
def outliers(col: Collection, index_dir: Path, generation: str) -> None:
    """Reruns alone when the number shown changes."""
    st.caption("The images farthest from their 5 nearest neighbours: unusual, mislabelled or broken files.")
    n = st.slider("How many", 1, max(1, min(200, col.count)), min(24, col.count), key="odd_n") \
        if col.count > 1 else 1
    found = col.outliers(int(n))
    st.download_button("Download as CSV", export.outliers_csv(col.paths, found), file_name="imgsim-odd-ones-out.csv",
                       mime="text/csv", on_click="ignore")
    by_row = {o.row: o for o in found}
    image_rows(col, [o.row for o in found],
               lambda r: f"#{by_row[r].rank} {plain(col.paths[r])} · mean {by_row[r].score:.3f} · "
                         f"nearest {by_row[r].nearest:.3f}")
