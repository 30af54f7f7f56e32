"""The Places tab: the photos that have a GPS position, drawn by longitude and latitude with no map tiles (this
page fetches nothing from outside); a box or lasso selection becomes the location filter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from dashboard import cached, state
from dashboard.components import filters
from dashboard.components.filters import filter_bar
from dashboard.components.map import draw_map
from dashboard.components.thumbs import image_rows
from imgsim.collection import Collection
from imgsim.serving.policy import plain

LISTED = 24  # selected photos shown


def available(col: Collection) -> bool:
    """Whether the tab is shown: some photo has a GPS position."""
    return col.metadata is not None and len(col.places()[0]) > 0


def render(col: Collection, index_dir: Path, generation: str) -> None:
    """The filter, the photos by place (others dimmed), the selection and what it does."""
    applied = filter_bar(col)
    base, drawn = cached.places_json(str(index_dir), generation, 560)
    rows = np.asarray(drawn, dtype=np.int64)
    passing = applied.keep(rows)
    st.caption(f"{len(drawn):,} photos with a position" + (f", {len(passing):,} of them match the filter (the "
               "others are faint)" if applied.where is not None else "")
               + ". Box- or lasso-select photos (toolbar at the top right) to filter by their area; click one to "
               "search with it. No map is drawn underneath: this page fetches nothing from the internet.")
    selection = draw_map(col, index_dir, generation, state.PLACES_MAP, 560, None, [], allowed=applied.mask,
                         base=base, drawn=rows)
    located, lat, lon = col.places()
    position = dict(zip(located.tolist(), zip(lat.tolist(), lon.tolist())))
    chosen = [r for r in selection if r in position]
    if not chosen:
        return
    lats, lons = [position[r][0] for r in chosen], [position[r][1] for r in chosen]
    st.markdown(f"**{len(chosen)} selected photo(s)**: latitude {min(lats):.5f} to {max(lats):.5f}, "
                f"longitude {min(lons):.5f} to {max(lons):.5f}")
    st.button("Filter to this area", key="places_filter", icon=":material/filter_alt:", type="primary",
              help="Every view then shows only the photos inside the box around the selection",
              on_click=filters.set_box, args=((min(lats), max(lats)), (min(lons), max(lons))))
    image_rows(col, chosen, lambda r: plain(col.paths[r]), limit=LISTED)
    if len(chosen) > LISTED:
        st.caption(f"… and {len(chosen) - LISTED} more.")
