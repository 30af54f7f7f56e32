"""The 2-D map: clamped parameters for small collections, grid snapping, rendering."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imgsim.analysis.map2d import MapBuilder, grid_layout, render_grid


def blobs(n_per=30, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0] * 10, [8.0] * 10, [-8.0] + [0.0] * 9])
    x = np.concatenate([c + rng.normal(size=(n_per, 10)) for c in centres])
    return x, np.repeat(np.arange(3), n_per)


def test_tsne_separates_clusters_and_is_deterministic():
    x, labels = blobs()
    a = MapBuilder(perplexity=10).fit(x).embedding_
    b = MapBuilder(perplexity=10).fit(x).embedding_
    np.testing.assert_array_equal(a, b)
    assert a.shape == (90, 2) and a.dtype == np.float32
    centroids = np.stack([a[labels == k].mean(axis=0) for k in range(3)])
    spread = max(np.linalg.norm(a[labels == k] - centroids[k], axis=1).mean() for k in range(3))
    gaps = [np.linalg.norm(centroids[i] - centroids[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 2 * spread


@pytest.mark.parametrize("n, perplexity", [(10, 3.0), (31, 10.0), (200, 30.0)])
def test_perplexity_and_components_are_clamped_and_reported(n, perplexity):
    rng = np.random.default_rng(n)
    m = MapBuilder().fit(rng.normal(size=(n, 150)))
    assert m.perplexity_ == pytest.approx(perplexity)
    assert m.n_components_ == 100
    assert m.embedding_.shape == (n, 2)


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_tiny_collections_get_a_layout(n):
    m = MapBuilder().fit(np.arange(n * 4, dtype=float).reshape(n, 4))
    assert m.embedding_.shape == (n, 2)


def test_grid_assigns_one_cell_each_and_keeps_layout_order():
    rng = np.random.default_rng(0)
    xy = rng.uniform(size=(50, 2))
    g = grid_layout(xy)
    assert g.side == 8 and len(g.rows) == 50
    assert len({tuple(c) for c in g.cells}) == 50
    # Left-most points land in left columns, top-most points (large y) in top rows.
    left = np.argsort(xy[:, 0])[:5]
    right = np.argsort(xy[:, 0])[-5:]
    assert g.cells[left, 1].mean() < g.cells[right, 1].mean()
    top = np.argsort(xy[:, 1])[-5:]
    bottom = np.argsort(xy[:, 1])[:5]
    assert g.cells[top, 0].mean() < g.cells[bottom, 0].mean()


def test_grid_samples_large_collections():
    g = grid_layout(np.random.default_rng(1).uniform(size=(3000, 2)), max_items=100)
    assert len(g.rows) == 100 and g.side == 10 and len(set(g.rows.tolist())) == 100


def test_render_grid_places_thumbnails_in_cells():
    g = grid_layout(np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]))
    colours = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255), 3: None}
    img = render_grid(g, lambda r: Image.new("RGB", (10, 10), colours[r]) if colours[r] else None, cell_px=10)
    assert img.size == (20, 20)
    assert img.getpixel((5, 5)) == (255, 0, 0)      # top-left
    assert img.getpixel((15, 5)) == (0, 255, 0)     # top-right
    assert img.getpixel((5, 15)) == (0, 0, 255)     # bottom-left
    assert img.getpixel((15, 15)) == (255, 255, 255)  # missing thumbnail: blank


def test_tsne_reports_its_iterations_as_it_goes_and_the_layout_is_unchanged(capsys):
    import sys
    import threading

    from imgsim.analysis import map2d

    x, _ = blobs()
    seen = []
    other_thread_printed = threading.Event()

    def progress(stage, done, total):
        seen.append((stage, done, total))
        print(f"callback {done}")  # a callback's own output is not taken for t-SNE's
        if len(seen) == 3:  # another thread printing mid-fit keeps its own output
            t = threading.Thread(target=lambda: (print("another session"), other_thread_printed.set()))
            t.start()
            t.join()

    with_progress = MapBuilder(perplexity=10).fit(x, progress).embedding_
    np.testing.assert_array_equal(with_progress, MapBuilder(perplexity=10).fit(x).embedding_)
    assert {s for s, _, _ in seen} == {"map"} and {t for _, _, t in seen} == {1000}
    done = [d for _, d, _ in seen]
    assert done[0] == 0 and done[-1] == 1000
    assert done[1:-1] == sorted(set(done[1:-1])) and len(done) >= 8  # every 50 iterations, increasing
    assert all(d % 50 == 0 for d in done)
    assert other_thread_printed.is_set()
    out = capsys.readouterr().out  # t-SNE's own lines reach no terminal
    assert out.replace("another session\n", "", 1) == "".join(f"callback {d}\n" for d in done)
    assert not isinstance(sys.stdout, map2d._ThreadStdout)  # and the stream is given back


def test_tiny_collections_report_their_map_done():
    seen = []
    MapBuilder().fit(np.zeros((3, 4)), lambda *a: seen.append(a))
    assert seen == [("map", 1, 1)]
