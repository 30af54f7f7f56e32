"""The interactive map of the collection (static/imgsim_map.*): hover previews, a click makes that image the
query, a lasso or box selection is returned to the view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dashboard import cached, state
from imgsim.collection import Collection
from imgsim.serving import charts, mapview


def preload_plotly() -> None:
    """A placeholder the map replaces, whose only work is to start loading Plotly.js in the browser (about a
    second of parsing with software rendering) before the page's map data arrives."""
    cached.map_component()(key="plotly_preload", data={"preload": True}, default={}, height=560)


def dimmed_rows(drawn: np.ndarray, allowed: np.ndarray | None) -> list[int]:
    """The drawn points a filter leaves out (``allowed``: its mask, None for no filter): drawn faint, not removed."""
    return [] if allowed is None else [int(r) for r in drawn[~allowed[drawn]]]


def draw_map(col: Collection, index_dir: Path, generation: str, key: str, height: int,
             query: int | list[int] | None, neighbours: list[int], ranks: list[int] | None = None,
             allowed: np.ndarray | None = None, base: str | None = None, drawn: np.ndarray | None = None
             ) -> list[int]:
    """The interactive map; a click makes that image the query (the page reruns). Returns the lasso/box selection.

    ``ranks`` number the neighbours' rings as their result cards are numbered; points outside the ``allowed`` mask
    are dimmed. ``base`` (Plotly JSON of the rows ``drawn``) replaces the t-SNE scatter (the Places view)."""
    overlay = charts.map_overlay(col.map_xy(), col.paths, query, neighbours, native_hover=False, ranks=ranks)
    drawn = mapview.drawn_rows(col.count) if drawn is None else drawn
    result = cached.map_component()(
        key=key, data={"base": base or cached.map_base_json(str(index_dir), generation, height),
                       "dimmed": dimmed_rows(drawn, allowed),
                       "overlay": go.Figure(data=overlay).to_json(),
                       "paths": col.paths if col.count <= mapview.MAP_POINTS else [],
                       "points": len(drawn), "height": height,
                       # The previews are tiles of the t-SNE map's drawn rows: every row, in order, up to MAP_POINTS.
                       "sprite": cached.hover_sprite(str(index_dir), generation)
                       if base is None or col.count <= mapview.MAP_POINTS else None,
                       "row_positions": col.count <= mapview.MAP_POINTS, "generation": generation,
                       "config": charts.plotly_config("toImage", "autoScale2d", "resetScale2d", responsive=True,
                                                      scrollZoom=True)},
        default={"selection": []}, height=height + 10, on_clicked_change=lambda: None,
        on_selection_change=lambda: None)
    clicked = result.clicked
    if clicked is not None and clicked != st.session_state.get(state.last_click_key(key)):
        st.session_state[state.last_click_key(key)] = clicked
        row = map_rows(clicked, generation)
        if row is None:
            st.toast("The collection was re-indexed since the map was drawn: click the point again.")
        elif len(row) == 1 and 0 <= row[0] < col.count and row[0] != state.query_row():
            state.set_query_row(col, row[0])
    return [r for r in (map_rows(result.selection, generation) or []) if 0 <= r < col.count]


def map_rows(value, generation: str) -> list[int] | None:
    """Rows from a map event: ``[generation, row]`` (a click), ``{generation, rows}`` (a selection) or bare
    rows; None when they were drawn from another generation (a re-index renumbers rows)."""
    if isinstance(value, dict):
        if value.get("generation", generation) != generation:
            return None
        value = value.get("rows") or []
    elif isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str):
        if value[0] != generation:
            return None
        value = [value[1]]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    # Sent by the browser, so anything may arrive: only whole numbers are rows.
    return [int(r) for r in value if isinstance(r, int) and not isinstance(r, bool)
            or isinstance(r, float) and r.is_integer()]
