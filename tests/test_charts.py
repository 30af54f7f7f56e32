"""Plotly figures and CSV exports: the data behind what the dashboard draws and offers for download."""

from __future__ import annotations

import csv
import io

import numpy as np

from imgsim.serving import charts
from imgsim.serving import export
from imgsim.analysis.duplicates import DuplicateGroup
from imgsim.progress import describe, fraction


def test_map_has_one_webgl_trace_per_folder_with_rows_as_customdata():
    xy = np.array([[0, 0], [1, 1], [2, 2], [3, 3]], dtype=float)
    labels = ["cats", "dogs", "cats", ""]
    paths = ["cats/a.jpg", "dogs/b.jpg", "cats/c.jpg", "top.jpg"]
    fig = charts.map_figure(xy, labels, paths, query=2, neighbours=[0, 1])
    names = [t.name for t in fig.data]
    assert names == ["(top folder)", "cats", "dogs", "neighbours", "query"]
    assert all(t.type == "scattergl" for t in fig.data)
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["cats"].customdata) == [0, 2] and list(by_name["cats"].x) == [0, 2]
    assert list(by_name["neighbours"].customdata) == [0, 1] and list(by_name["neighbours"].text) == ["1", "2"]
    assert list(by_name["query"].customdata) == [2] and by_name["query"].marker.symbol == "star"


def test_neighbour_rings_carry_the_result_cards_ranks():
    """An indexed query is result #1 (distance 0) and drawn as the star: its neighbours' rings read 2, 3, …"""
    traces = charts.map_overlay(np.arange(8.0).reshape(4, 2), ["a", "b", "c", "d"], query=3, neighbours=[1, 0],
                                ranks=[2, 3])
    rings = next(t for t in traces if t.name == "neighbours")
    assert list(rings.customdata) == [1, 0] and list(rings.text) == ["2", "3"]


def test_map_without_native_hover_leaves_hover_to_the_page():
    fig = charts.map_figure(np.zeros((2, 2)), ["a", "a"], ["a/1", "a/2"], query=0, native_hover=False)
    assert all(t.hoverinfo == "none" for t in fig.data)
    assert fig.data[0].showlegend is False  # a single folder needs no legend


def test_palette_gives_distinct_colours_for_twenty_folders():
    assert len(set(charts.palette(20))) == 20


def test_histogram_marks_the_threshold_and_counts_images_within_it():
    fig = charts.distance_histogram(np.array([0.05, 0.1, 0.3, 0.5]), 0.2)
    assert list(fig.data[0].x) == [0.05, 0.1, 0.3, 0.5]
    assert fig.layout.shapes[0].x0 == 0.2
    assert fig.layout.annotations[0].text == "threshold 0.20: 2 image(s) have a neighbour this close"


def test_csv_exports():
    rows = list(csv.reader(io.StringIO(export.selection_csv(["a/x.jpg", "b/y.jpg"], ["a", "b"],
                                                            np.array([[1.0, 2.0], [3.0, 4.5]]), [1]))))
    assert rows == [["path", "folder", "x", "y"], ["b/y.jpg", "b", "3.0000", "4.5000"]]
    groups = [DuplicateGroup((0, 2), (0.0, 0.0)), DuplicateGroup((1, 3, 4), (0.1, 0.1, 0.25))]
    rows = list(csv.reader(io.StringIO(export.groups_csv(["p0", "p1", "p2", "p3", "p4"], groups, 0.3))))
    assert rows[0] == ["group", "path", "nearest_distance", "threshold"]
    assert rows[1:] == [["1", "p0", "0.000000", "0.3"], ["1", "p2", "0.000000", "0.3"],
                        ["2", "p1", "0.100000", "0.3"], ["2", "p3", "0.100000", "0.3"], ["2", "p4", "0.250000", "0.3"]]


def test_progress_text_shows_rate_and_time_left():
    assert describe("extract", 120, 373, 3.0) == "Extracting features: 120 / 373 · 40.0 images/s · about 6 s left"
    assert describe("extract", 373, 373, 9.0) == "Extracting features: 373 / 373 · 41.4 images/s"
    assert describe("extract", 10, 5000, 1.0) == "Extracting features: 10 / 5,000 · 10.0 images/s · about 8 min 19 s left"
    assert describe("map", 0, None, 1.0) == "Building 2-D map (t-SNE)…"
    assert fraction(5, 10) == 0.5 and fraction(3, None) == 0.0


def test_the_threshold_label_sits_above_the_histogram_not_over_its_bars():
    """It was drawn inside the plot area, over the tallest bars near the threshold."""
    d = np.array([0.05, 0.1, 0.12, 0.3, 0.5])
    for threshold, side in ((0.1, "left"), (0.45, "right")):  # kept inside the figure on either half
        fig = charts.distance_histogram(d, threshold)
        (note,) = fig.layout.annotations
        assert (note.xref, note.x, note.yref, note.y, note.yanchor) == ("x", threshold, "paper", 1, "bottom")
        assert note.xanchor == side and note.showarrow is False
        assert fig.layout.margin.t >= 30  # room above the plot area for the one line
        assert fig.layout.shapes[0].x0 == threshold


def test_rank_labels_of_near_points_do_not_cover_each_other():
    """Rings of near neighbours all put their rank 'top center', one on top of the other."""
    xy = np.array([[0.0, 0.0], [100.0, 100.0], [50.0, 50.0], [50.4, 50.2], [50.8, 49.9], [20.0, 80.0]])
    traces = charts.map_overlay(xy, list("abcdef"), query=0, neighbours=[2, 3, 4, 5], ranks=[2, 3, 4, 5])
    rings = next(t for t in traces if t.name == "neighbours")
    spots = list(rings.textposition)
    assert len(set(spots[:3])) == 3 and spots[3] == "top center"  # a point alone keeps the usual place
    _, centres = charts.label_spots(xy[[2, 3, 4, 5]], np.array([[0.0, 0.0], [100.0, 100.0]]), ["2", "3", "4", "5"])
    boxes = [(x, y, 5.0, 7.0) for x, y in centres]
    assert all(charts._overlap(a, b) == 0 for i, a in enumerate(boxes) for b in boxes[i + 1:])
