"""End to end in a real browser on a CLIP index: describe, see k results, the neighbours lit on the map,
and a shared ?text= link that restores the search."""

from __future__ import annotations

import urllib.parse

import pytest

from .test_e2e_browser import ARTIFACTS, Server, browser_page, result_cards, settled  # noqa: F401 (fixture)

pytestmark = pytest.mark.browser


def lit_neighbours(page) -> list[int]:
    """Rows of the map's 'neighbours' highlight trace, as the browser drew it."""
    return page.locator(".imgsim-plot").first.evaluate(
        "d => { const t = d._fullData.find(t => t.name === 'neighbours'); return t ? Array.from(t.customdata) : []; }")


def test_search_by_describing_in_a_real_browser(browser_page, clip_index, photo_dir, random_clip, tmp_path):
    from imgsim.collection import Collection

    col = Collection.open(clip_index)
    expected = col.neighbors_of_vector(random_clip.embed_text("a tiger").vector, 8)
    server = Server({"IMGSIM_INDEX": str(clip_index), "IMGSIM_IMAGES": str(photo_dir), "IMGSIM_WEIGHTS": "random",
                     "IMGSIM_CACHE": str(tmp_path / "cache")}, ARTIFACTS / "server-clip.log")
    page = browser_page
    try:
        page.goto(server.url)
        page.wait_for_selector(".imgsim-map[data-ready='1']")
        box = page.get_by_role("textbox", name="Describe what you are looking for")
        box.fill("a tiger")
        box.press("Enter")
        page.get_by_text("“a tiger”").first.wait_for()
        page.wait_for_function("() => document.body.innerText.includes('#8 · distance')")
        settled(page)
        cards = result_cards(page)
        assert [r for r, _ in cards] == list(range(1, 9))
        assert [d for _, d in cards] == [round(n.distance, 3) for n in expected.neighbors]
        page.wait_for_function("() => { const d = document.querySelector('.imgsim-plot');"
                               " return d && d._fullData && d._fullData.some(t => t.name === 'neighbours'); }")
        assert lit_neighbours(page) == [n.row for n in expected.neighbors]
        assert urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query).get("text") == ["a tiger"]
        page.screenshot(path=str(ARTIFACTS / "clip-1-text.png"), full_page=True)

        # The shared link restores the same search in a fresh page.
        shared = page.url
        page.goto("about:blank")
        page.goto(shared)
        page.get_by_text("“a tiger”").first.wait_for()
        page.wait_for_function("() => document.body.innerText.includes('#8 · distance')")
        settled(page)
        assert page.get_by_role("textbox", name="Describe what you are looking for").input_value() == "a tiger"
        assert [d for _, d in result_cards(page)] == [d for _, d in cards]
        page.wait_for_function("() => { const d = document.querySelector('.imgsim-plot');"
                               " return d && d._fullData && d._fullData.some(t => t.name === 'neighbours'); }")
        assert lit_neighbours(page) == [n.row for n in expected.neighbors]
        page.screenshot(path=str(ARTIFACTS / "clip-2-restored.png"), full_page=True)
        assert "Traceback" not in page.content()
    finally:
        server.stop()
