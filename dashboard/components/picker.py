"""The more-like-these picker: images to look like and to avoid, chosen by name."""

from __future__ import annotations

import streamlit as st

from dashboard import state
from imgsim.collection import Collection

#: Names offered at once: every option travels to the browser on each rerun.
OPTIONS = 2000


def more_like_picker(col: Collection, examples: state.Examples | None) -> None:
    """Choose positives and negatives by name (the gallery's names; results and the map lasso add to them)."""
    with st.expander("More like these: search with several images", expanded=examples is not None):
        st.caption("The query becomes the normalised mean of the images to look like, minus half the mean of the "
                   "images to avoid (Rocchio). 👍/👎 under a result, or **More like these** after a lasso "
                   "selection on the Map tab, add to these lists.")
        chosen_pos, chosen_neg = state.examples_chosen(col)
        options = col.paths
        if col.count > OPTIONS:  # a bounded list: the gallery filter's matches
            needle = st.session_state.get(state.GALLERY_FILTER, "").strip()
            matches = [col.paths[int(r)] for r in col.rows_matching(needle, OPTIONS)] if needle else []
            options = list(dict.fromkeys(chosen_pos + chosen_neg + matches))
            st.caption(f"{col.count:,} images: type part of a name in the gallery's filter above to list them here.")
        a, b = st.columns(2)
        with a:
            pos = st.multiselect("Look like", options, default=chosen_pos, key=state.picker_key("pos"))
        with b:
            neg = st.multiselect("Not like", options, default=chosen_neg, key=state.picker_key("neg"))
        c1, c2 = st.columns(2)
        if c1.button("Search with these", key="ml_go", disabled=not pos, width="stretch"):
            state.set_more_like(col, pos, neg)
        if examples is not None and c2.button("Back to one image", key="ml_clear", width="stretch"):
            state.set_query_row(col, examples.positives[0])
