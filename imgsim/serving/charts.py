"""Plotly figures: the t-SNE map (WebGL, coloured by sub-folder) and the nearest-distance histogram."""

from __future__ import annotations

import base64
import io
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from PIL import Image

QUERY_COLOUR = "#d62728"
NEIGHBOUR_COLOUR = "#111111"
#: Mode-bar buttons that send the chart (the collection's file names) to an outside service: Plotly.js 3 shows
#: "Share chart…" (an upload to Plotly Cloud) unless told not to.
OUTSIDE_BUTTONS = ("sendChartToCloud", "sendDataToCloud", "editInChartStudio")


def plotly_config(*remove: str, **options) -> dict:
    """The Plotly.js config of every chart: no button or link to an outside service, no logo; ``remove`` drops
    more mode-bar buttons, ``options`` add settings."""
    return {"displaylogo": False, "showSendToCloud": False, "showLink": False,
            "plotlyServerURL": "", "modeBarButtonsToRemove": [*OUTSIDE_BUTTONS, *remove], **options}


def palette(n: int) -> list[str]:
    """``n`` distinguishable colours (Plotly's qualitative sets, cycled beyond 26)."""
    base = qualitative.Plotly + qualitative.D3[1:] + qualitative.Alphabet if n > 10 else qualitative.Plotly
    return [base[i % len(base)] for i in range(n)]


def map_base(xy: np.ndarray, labels: Sequence[str] | Mapping[int, str], paths: Sequence[str], height: int = 520,
             native_hover: bool = True, rows: np.ndarray | None = None,
             density: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> go.Figure:
    """Scatter of the collection; each point's ``customdata`` is its row, so events map back to images.

    One WebGL trace per sub-folder when there are several (the legend lists the folders).
    ``native_hover=False`` leaves hover to the host page (the dashboard shows a thumbnail instead).
    ``rows`` limits the points drawn (a large collection's sample); ``density`` (x, y, counts from
    :func:`imgsim.serving.mapview.density`) is drawn underneath so the undrawn points still show where they are.
    """
    xy = np.asarray(xy, dtype=float)
    drawn = np.arange(len(xy)) if rows is None else np.asarray(rows)
    names = sorted({labels[int(i)] for i in drawn})
    fig = go.Figure()
    if density is not None:
        dx, dy, counts = density
        fig.add_trace(go.Heatmap(x=dx, y=dy, z=np.log1p(counts), colorscale=[[0, "rgba(255,255,255,0)"],
                                 [1, "rgba(60,70,110,0.55)"]], showscale=False, hoverinfo="skip", zsmooth="best",
                                 name="density"))
    colours = dict(zip(names, palette(len(names))))
    rows_of: dict[str, list[int]] = {name: [] for name in names}
    for i in drawn:
        rows_of[labels[int(i)]].append(int(i))
    for name in names:
        rows = rows_of[name]
        fig.add_trace(go.Scattergl(
            x=xy[rows, 0], y=xy[rows, 1], mode="markers", name=name or "(top folder)",
            customdata=rows, text=[paths[r] for r in rows], hovertemplate="%{text}<extra></extra>",
            marker={"size": 7 if len(drawn) <= 5000 else 4, "color": colours[name], "opacity": 0.85,
                    "line": {"width": 0}},
            showlegend=1 < len(names) <= 40))
    if not native_hover:
        fig.update_traces(hoverinfo="none", hovertemplate=None)
    fig.update_layout(
        height=height, margin={"l": 0, "r": 0, "t": 10, "b": 0}, dragmode="lasso", hovermode="closest",
        plot_bgcolor="white", paper_bgcolor="white", uirevision="map",
        legend={"itemsizing": "constant", "font": {"size": 10}, "orientation": "h", "yanchor": "top", "y": -0.02,
                "x": 0, "itemwidth": 30},
        xaxis={"visible": False}, yaxis={"visible": False})
    return fig


#: Where a ring's rank may go, in order of preference, and the label's centre from the ring's (px, y up).
LABEL_SPOTS = {"top center": (0, 14), "bottom center": (0, -14), "middle right": (13, 0), "middle left": (-13, 0),
               "top right": (11, 13), "top left": (-11, 13), "bottom right": (11, -13), "bottom left": (-11, -13)}
#: The map's drawn size the labels are spaced for (the Search tab's small map is about this wide and tall).
LABEL_BOX_PX = 480


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Area shared by two boxes given as (centre x, centre y, half width, half height)."""
    wide = min(a[0] + a[2], b[0] + b[2]) - max(a[0] - a[2], b[0] - b[2])
    tall = min(a[1] + a[3], b[1] + b[3]) - max(a[1] - a[3], b[1] - b[3])
    return max(0.0, wide) * max(0.0, tall)


def label_spots(xy: np.ndarray, extent: np.ndarray, texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """A Plotly ``textposition`` for each point's label, chosen so that labels of nearby points do not cover each
    other or another point's ring (greedy, in the order given: the nearest results first), and each label's
    centre in pixels of a :data:`LABEL_BOX_PX` map spanning ``extent`` (``[[x0, y0], [x1, y1]]``)."""
    xy, extent = np.asarray(xy, dtype=float), np.asarray(extent, dtype=float)
    span = np.where(extent[1] - extent[0] > 0, extent[1] - extent[0], 1.0)
    px = (xy - extent[0]) / span * LABEL_BOX_PX
    ring = 7.0  # a ring's radius (marker size 13)
    placed: list[tuple[float, float, float, float]] = []  # centre x, y and half width, height of each label
    spots, centres = [], np.zeros((len(px), 2))

    def clash(box: tuple[float, float, float, float], own: int) -> float:
        """Area of the label ``box`` covering labels placed so far and other points' rings."""
        return (sum(_overlap(box, other) for other in placed)
                + sum(_overlap(box, (x, y, ring, ring)) for j, (x, y) in enumerate(px) if j != own))

    for i, ((x, y), text) in enumerate(zip(px, texts)):
        hw, hh = 3.5 * len(text) + 1.5, 7.0  # 11 px digits
        costs = {name: clash((x + dx, y + dy, hw, hh), i) for name, (dx, dy) in LABEL_SPOTS.items()}
        best = min(LABEL_SPOTS, key=lambda name: costs[name])  # the first free spot, else the least covered
        dx, dy = LABEL_SPOTS[best]
        placed.append((x + dx, y + dy, hw, hh))
        spots.append(best)
        centres[i] = (x + dx, y + dy)
    return spots, centres


def map_overlay(xy: np.ndarray, paths: Sequence[str], query: int | Sequence[int] | None = None,
                neighbours: Sequence[int] = (), native_hover: bool = True,
                ranks: Sequence[int] | None = None) -> list[go.Scattergl]:
    """Highlight traces drawn over :func:`map_base`: rings on the neighbours numbered with their ``ranks`` in
    the results (1, 2, … when not given), a star on the query (one per image of a 'more like these' query)."""
    xy = np.asarray(xy, dtype=float)
    traces = []
    if len(neighbours):
        rows = [int(r) for r in neighbours]
        texts = [str(i) for i in (ranks if ranks is not None else range(1, len(rows) + 1))]
        spots, _ = label_spots(xy[rows], np.array([xy.min(axis=0), xy.max(axis=0)]), texts)
        traces.append(go.Scattergl(
            x=xy[rows, 0], y=xy[rows, 1], mode="markers+text", name="neighbours", customdata=rows,
            text=texts, textposition=spots,
            textfont={"size": 11, "color": NEIGHBOUR_COLOUR}, hovertext=[paths[r] for r in rows],
            hovertemplate="%{hovertext}<extra></extra>",
            marker={"size": 13, "color": "rgba(0,0,0,0)", "line": {"width": 2, "color": NEIGHBOUR_COLOUR}}))
    stars = [] if query is None else [int(query)] if np.ndim(query) == 0 else [int(q) for q in query]
    if stars:
        traces.append(go.Scattergl(
            x=xy[stars, 0], y=xy[stars, 1], mode="markers", name="query", customdata=stars,
            text=[paths[q] for q in stars], hovertemplate="query: %{text}<extra></extra>",
            marker={"size": 20, "symbol": "star", "color": QUERY_COLOUR, "line": {"width": 1, "color": "white"}}))
    if not native_hover:
        for t in traces:
            t.update(hoverinfo="none", hovertemplate=None)
    return traces


def map_figure(xy: np.ndarray, labels: Sequence[str], paths: Sequence[str], query: int | None = None,
               neighbours: Sequence[int] = (), height: int = 520, native_hover: bool = True) -> go.Figure:
    """The whole map: :func:`map_base` with :func:`map_overlay` on top."""
    fig = map_base(xy, labels, paths, height, native_hover)
    fig.add_traces(map_overlay(xy, paths, query, neighbours, native_hover))
    return fig


def distance_histogram(distances: np.ndarray, threshold: float, height: int = 320) -> go.Figure:
    """Histogram of each image's distance to its nearest other image, with the threshold marked."""
    d = np.asarray(distances, dtype=float)
    d = d[np.isfinite(d)]
    if len(d) > 50_000:  # a large collection: the browser gets 60 bars, not a million values
        counts, edges = np.histogram(d, bins=60)
        fig = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges),
                               marker={"color": "#4c78a8"}, hovertemplate="distance %{x:.3f}<br>%{y} images<extra></extra>"))
    else:
        fig = go.Figure(go.Histogram(x=d, nbinsx=min(60, max(10, len(d) // 5)), marker={"color": "#4c78a8"},
                                     hovertemplate="distance %{x}<br>%{y} images<extra></extra>"))
    within = int(np.sum(d <= threshold))
    fig.add_vline(x=threshold, line={"color": QUERY_COLOUR, "width": 2, "dash": "dash"})
    # Above the plot area, not over the bars; on the line's left when it stands in the right half, so that the
    # text stays inside the figure.
    low, high = (float(min(d.min(), threshold)), float(max(d.max(), threshold))) if len(d) else (0.0, 1.0)
    right_half = threshold > (low + high) / 2
    fig.add_annotation(x=threshold, xref="x", y=1, yref="paper", yanchor="bottom", showarrow=False,
                       xanchor="right" if right_half else "left", font={"color": QUERY_COLOUR},
                       text=f"threshold {threshold:.2f}: {within} image(s) have a neighbour this close")
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 34, "b": 10}, bargap=0.05,
                      xaxis_title="distance to nearest other image", yaxis_title="images",
                      plot_bgcolor="white")
    return fig


def data_uri(image: Image.Image, quality: int = 80) -> str:
    """A small JPEG as a ``data:`` URI, for hover images inside the map."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
