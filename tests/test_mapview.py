"""The map of a large collection: bounded drawn sample, density layer, preview tiles, sampled t-SNE."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np

from imgsim.serving import charts
from imgsim.serving import mapview
from imgsim.analysis.map2d import SampledMap, place_by_neighbors


def test_drawn_rows_are_bounded_deterministic_and_all_when_small():
    assert mapview.drawn_rows(10, limit=20).tolist() == list(range(10))
    a, b = mapview.drawn_rows(1_000_000), mapview.drawn_rows(1_000_000)
    assert len(a) == mapview.MAP_POINTS and (a == b).all() and (np.diff(a) > 0).all()


def test_tiles_cover_the_drawn_rows_in_order():
    tiles = mapview.tiles_for(np.arange(2500) * 3, per_tile=1024)
    assert [len(t) for t in tiles] == [1024, 1024, 452] and tiles[1][0] == 1024 * 3


def test_large_map_figure_draws_the_sample_over_a_density_of_everything():
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(60_000, 2))
    labels = [f"f{i % 3}" for i in range(60_000)]
    rows = mapview.drawn_rows(60_000, limit=2000)
    fig = charts.map_base(xy, labels, [f"p{i}" for i in range(60_000)], rows=rows, density=mapview.density(xy))
    heat = [t for t in fig.data if t.type == "heatmap"]
    points = [t for t in fig.data if t.type == "scattergl"]
    assert len(heat) == 1 and heat[0].hoverinfo == "skip" and np.isclose(np.expm1(np.array(heat[0].z)).sum(), 60_000)
    assert sum(len(t.customdata) for t in points) == 2000
    assert sorted(r for t in points for r in t.customdata) == rows.tolist()
    # The query's neighbours are highlighted from the full coordinates, drawn or not.
    hidden = int(np.setdiff1d(np.arange(60_000), rows)[0])
    overlay = charts.map_overlay(xy, [f"p{i}" for i in range(60_000)], query=hidden, neighbours=[hidden + 1])
    assert [t.name for t in overlay] == ["neighbours", "query"] and overlay[1].x[0] == xy[hidden, 0]


def test_sampled_map_fits_tsne_on_the_sample_and_places_the_rest_near_their_neighbours():
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=10, size=(4, 20))
    label = rng.integers(0, 4, 1200)
    x = centres[label] + rng.normal(size=(1200, 20))
    m = SampledMap(sample_size=300, max_iter=500).fit(x)
    assert len(m.sample_rows_) == 300 and m.embedding_.shape == (1200, 2)
    # Placed points land among the sampled points of their own cluster.
    xy = m.embedding_
    centroid = np.array([xy[m.sample_rows_][label[m.sample_rows_] == c].mean(axis=0) for c in range(4)])
    rest = np.setdiff1d(np.arange(1200), m.sample_rows_)
    nearest = np.argmin(((xy[rest, None, :] - centroid[None]) ** 2).sum(-1), axis=1)
    assert (nearest == label[rest]).mean() > 0.95


def test_place_by_neighbors_uses_only_placed_points_and_weights_by_distance():
    xy = np.array([[0.0, 0.0], [10.0, 0.0], [99.0, 99.0]], dtype=np.float32)
    known = np.array([True, True, False])
    out = place_by_neighbors(np.array([[0, 1, 2], [2, -1, -1]]), np.array([[1.0, 3.0, 0.0], [0.1, 0, 0]]), xy, known)
    assert out[0, 0] == np.float32(10 / 3.001 / (1 / 1.001 + 1 / 3.001))
    assert out[0, 1] == 0 and (out[1] == np.array([5.0, 0.0])).all()  # no placed neighbour: the centre


def test_each_server_process_has_its_own_previews_and_removes_only_ended_ones(tmp_path):
    """Two servers from one checkout: the second's first view once emptied static/cache/ of the first's tiles."""
    cache = tmp_path / "cache"
    running = mapview.own_previews(cache)
    (running / mapview.OWNER).write_text(str(os.getppid()))  # another server, still running
    (running / "abc-gen-000001.jpg").write_bytes(b"tile")
    earlier = mapview.own_previews(cache)  # this process's, before its caches were cleared
    ended = cache / ("0" * 32)
    ended.mkdir()
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (ended / mapview.OWNER).write_text(done.stdout.strip())  # a process that has exited
    (ended / "abc-gen-000001.jpg").write_bytes(b"tile")
    (cache / "old-layout-gen-000001.jpg").write_bytes(b"tile")  # loose files of an earlier version
    other = mapview.own_previews(cache)  # a second server starting
    assert (running / "abc-gen-000001.jpg").read_bytes() == b"tile"
    assert not ended.exists() and not earlier.exists() and not (cache / "old-layout-gen-000001.jpg").exists()
    assert other != running and re.fullmatch(r"[0-9a-f]{32}", other.name)
    assert (other / mapview.OWNER).read_text() == str(os.getpid())
    assert sorted(p.name for p in cache.iterdir()) == sorted([running.name, other.name])


def test_a_live_server_with_this_process_id_keeps_its_previews(tmp_path):
    """Owners were bare process ids: a server in another container sharing the checkout (often the same id) or
    one before a restart lost its live folder to whichever process had that id now."""
    import socket

    cache = tmp_path / "cache"
    folders = {}
    for case, record in {"other container": f"{os.getpid()} {mapview._start_time(os.getpid())} elsewhere",
                         "before a restart": f"{os.getpid()} 1 {socket.gethostname()}"}.items():
        folders[case] = cache / case.replace(" ", "-")
        folders[case].mkdir(parents=True)
        (folders[case] / mapview.OWNER).write_text(str(os.getpid()))
        (folders[case] / mapview.STARTED).write_text(record)
    mine = mapview.own_previews(cache)
    assert (mine / mapview.STARTED).read_text() == f"{os.getpid()} {mapview._start_time(os.getpid())} " \
                                                   f"{socket.gethostname()}"
    assert mapview._start_time(os.getpid()).isdigit()
    assert folders["other container"].is_dir()  # live elsewhere, as far as this host can tell: kept
    assert not folders["before a restart"].exists()  # same host, same id, another start: that server ended
    again = mapview.own_previews(cache)  # this process's earlier folder goes
    assert not mine.exists() and again.is_dir() and folders["other container"].is_dir()
