"""In a real browser: the Places view draws the photos with a position by longitude and latitude with nothing
fetched from outside, and the points a filter leaves out are drawn faint (screenshot under artifacts/e2e/)."""

from __future__ import annotations

import pytest

from imgsim.build import build_index
from imgsim.collection import Collection
from imgsim.metadata.filters import parse_where

from .test_app_metadata import metadata_folder
from .test_e2e_browser import ARTIFACTS, Server, browser_page, settled  # noqa: F401  (browser_page is a fixture)
from .test_filters_search import StandIn

pytestmark = pytest.mark.browser


def test_places_draws_located_photos_offline_and_dims_those_the_filter_leaves_out(browser_page, tmp_path):
    root = metadata_folder(tmp_path / "photos")
    index = tmp_path / "ix"
    model = StandIn()
    build_index(root, index, weights="random", pooling="avg", metadata=tmp_path / "captions.csv",
                model_factory=lambda w, p, b: model)
    col = Collection.open(index)
    rows, _, _ = col.places()
    passing = set(rows[col.filter_mask(parse_where(["camera = NIKON D850"]))[rows]].tolist())
    server = Server({"IMGSIM_INDEX": str(index), "IMGSIM_IMAGES": str(root), "IMGSIM_WEIGHTS": "random",
                     "IMGSIM_CACHE": str(tmp_path / "cache")}, tmp_path / "streamlit.log")
    outside = []
    page = browser_page
    # blob: and data: URLs are the page's own memory; any other address not the server's would be outside.
    page.on("request", lambda r: outside.append(r.url) if r.url.split(":")[0] not in ("blob", "data")
            and not r.url.startswith(server.url) else None)
    try:
        page.goto(server.url + "?tab=Places&where=camera%20%3D%20NIKON%20D850")
        page.wait_for_selector(".imgsim-map[data-ready='1']")
        settled(page)
        drawn = page.evaluate("""() => {
            const plot = document.querySelector('.imgsim-plot');
            const out = {};
            for (const t of plot.data) {
                if (!t.customdata || t.type !== 'scattergl') continue;
                t.customdata.forEach((r, i) => { out[r] = Array.isArray(t.marker.opacity) ? t.marker.opacity[i]
                                                                                         : t.marker.opacity; });
            }
            return out; }""")
        page.screenshot(path=str(ARTIFACTS / "places-filtered.png"), full_page=False)
    finally:
        server.stop()
    assert sorted(int(r) for r in drawn) == sorted(rows.tolist())
    assert {int(r) for r, o in drawn.items() if o < 0.5} == set(rows.tolist()) - passing  # faint: left out
    assert {int(r) for r, o in drawn.items() if o > 0.5} == passing
    assert outside == []
