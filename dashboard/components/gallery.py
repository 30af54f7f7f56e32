"""The gallery: the collection's thumbnails, filtered by name, a page at a time; a click searches with one."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import state
from dashboard.components.cards import short
from dashboard.components.thumbs import image_or_placeholder, in_rows, thumb
from dashboard.fragments import section
from dashboard.paths import static_text
from imgsim.collection import Collection
from imgsim.metadata.filters import Filter
from imgsim.serving.policy import plain

PAGE = 24


def gallery(index_dir: Path, generation: str, where: Filter | None = None) -> None:
    """The name filter (the more-like-these picker lists its matches too, so it reruns the page), then pages of
    the images that also pass the metadata filter ``where``."""
    needle = st.text_input("Filter by file name", key=state.GALLERY_FILTER,
                           placeholder="e.g. tiger, fruit/").strip().lower()
    pages(index_dir, generation, needle, where)


@section
def pages(col: Collection, index_dir: Path, generation: str, needle: str, where: Filter | None) -> None:
    """The thumbnails whose names contain ``needle``; turning a page reruns only this."""
    st.html(f"<style>{static_text('imgsim_cards.css')}</style>")
    rows = col.rows_matching(needle)
    if where:
        rows = rows[col.filter_mask(where)[rows]]
    if not len(rows):
        st.info(f"No file name contains “{plain(needle)}”." if not where else
                "No image matching the filter" + (f" has a name containing “{plain(needle)}”." if needle else "."))
        return
    count = (len(rows) + PAGE - 1) // PAGE
    page = st.number_input(f"Page (of {count})", 1, count, 1, key="gallery_page") if count > 1 else 1
    st.caption(f"{len(rows):,} image(s)" + (f" matching “{plain(needle)}”" if needle else "")
               + (" that pass the filter" if where else ""))

    def pick(row: int) -> None:
        with st.container(key=f"thumb_pick_{row}"):  # a square box before the image loads (imgsim_cards.css)
            image_or_placeholder(thumb(col, row, 160, square="pad"))
        st.button(plain(short(col.paths[row].rsplit("/", 1)[-1], 18)), key=f"pick_{row}", width="stretch",
                  help=f"Search with {plain(col.paths[row])}", type="tertiary", on_click=state.set_query_row,
                  args=(col, row))

    in_rows([int(r) for r in rows[(page - 1) * PAGE: page * PAGE]], pick)
