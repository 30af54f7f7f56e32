"""The Map tab: the whole collection's t-SNE map, or its image grid; a lasso lists images and can search with them."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import cached, state
from dashboard.components.filters import Active, filter_bar
from dashboard.components.map import draw_map
from dashboard.components.thumbs import image_rows
from dashboard.fragments import section
from imgsim.collection import Collection
from imgsim.serving import export
from imgsim.serving.policy import plain

LISTED = 48  # selected images shown; the CSV has all


def render(col: Collection, index_dir: Path, generation: str) -> None:
    """The filter, the map (or grid) and the lasso's list."""
    map_view(index_dir, generation, filter_bar(col))


@section
def map_view(col: Collection, index_dir: Path, generation: str, applied: Active) -> None:
    """Reruns alone when the view changes or a lasso selects; a click or "More like these" reruns the page."""
    view = st.segmented_control("View", ["Scatter", "Image grid"], default="Scatter", key="map_view")
    if view == "Image grid":
        png = cached.grid_png(str(index_dir), generation, 64)
        st.download_button("Download PNG", png, file_name="imgsim-tsne-grid.png", mime="image/png",
                           on_click="ignore")
        st.image(png, caption="t-SNE map snapped to a grid (up to 900 images)", width="stretch")
        return
    st.caption("Lasso or box-select points (toolbar at the top right) to list them below; scroll to zoom."
               + (f" The {col.count - applied.passing:,} images the filter leaves out are faint."
                  if applied.where is not None else ""))
    selection = draw_map(col, index_dir, generation, state.FULL_MAP, 700, state.current_query(col), [],
                         allowed=applied.mask)
    if not selection:
        return
    selected = len(selection)
    selection = [r for r in selection if applied.allows(r)]  # a faint point is drawn, not chosen
    if applied.where is None:
        st.markdown(f"**{selected} selected image(s)**")
    else:
        st.markdown(f"**{selected} selected, {len(selection)} match the filter**")
    if not selection:
        st.caption("None of the selected images match the filter: select elsewhere or change it.")
        return
    csv = export.selection_csv(col.paths, col.labels, col.map_xy(), selection)
    st.download_button("Download selection as CSV", csv, file_name="imgsim-selection.csv", mime="text/csv",
                       on_click="ignore")
    st.button("More like these", key="lasso_more_like", icon=":material/thumb_up:",
              help="Search with the selected images together (opens the Search tab)",
              on_click=state.search_with_selection, args=(col, [col.paths[r] for r in selection]))
    image_rows(col, selection, lambda r: plain(col.paths[r]), limit=LISTED)
    if len(selection) > LISTED:
        st.caption(f"… and {len(selection) - LISTED} more in the CSV.")
