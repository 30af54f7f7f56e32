"""End to end in a real browser: `streamlit run app.py` driven by Debian's Chromium through Playwright.

Screenshots are saved under artifacts/e2e/ (or $IMGSIM_ARTIFACTS). On CI (CI=true) a missing browser is a
failure, not a skip: .ci/run installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import assert_reference_neighbors, make_photo, reference_distances

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("IMGSIM_ARTIFACTS", REPO / "artifacts" / "e2e"))
RESULT = re.compile(r"#(\d+)\s*(?:·\s*)?distance ([0-9.]+)\s*(?:·\s*)?cos")

pytestmark = pytest.mark.browser


def _require_browser():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is not installed (.ci/run installs it)")
        pytest.skip("playwright is not installed")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM} (.ci/run installs Debian's chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`streamlit run app.py` on a free localhost port, stopped on exit."""

    latest: Server | None = None  # the one a failure message reads the log of

    def __init__(self, env: dict[str, str], log: Path):
        Server.latest = self
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(self.port),
             "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=REPO, env={**os.environ, **env}, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(self.url + "_stcore/health", timeout=2).read() == b"ok":
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"streamlit did not start: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def browser_page():
    _require_browser()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--use-gl=swiftshader", "--enable-unsafe-swiftshader",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1500, "height": 1200})
        page.set_default_timeout(90_000)
        yield page
        browser.close()


def settled(page) -> None:
    """Wait until the script run has finished and no stale element from the previous run is still shown.

    Streamlit keeps the previous run's elements on screen while a rerun draws the new ones, so text that
    the new run has already written (a caption) does not mean the results below it are new yet.
    """
    page.wait_for_function("""() => {
        const app = document.querySelector("[data-testid='stApp']");
        return app && app.getAttribute('data-test-script-state') === 'notRunning'
            && !document.querySelector("[data-stale='true']"); }""")


def results_for(page, caption: str) -> list[tuple[int, float]]:
    """Wait for the results of the query captioned ``caption`` (8 cards, rerun finished), then read them."""
    try:
        page.get_by_text(caption).wait_for()
    except Exception as e:  # a CI log is all there is to read: say what the page showed instead
        raise AssertionError(f"{caption!r} never appeared: {e}\n{page_state(page)}") from None
    page.wait_for_function("() => /#8\\s*(·\\s*)?distance/.test(document.body.innerText)")
    settled(page)
    return result_cards(page)


def click_when_still(page, locator) -> None:
    """Click ``locator`` once its box has stopped moving (three reads 150 ms apart agree).

    A layout that still shifts after a resize or an expander's opening can move the button between the mouse's
    press and its release: the browser then fires no click at all (seen on CI: the pointer ended over the
    button of the row above, and the page never reran).
    """
    locator.scroll_into_view_if_needed()
    boxes: list = []
    for _ in range(40):
        boxes = (boxes + [locator.bounding_box()])[-3:]
        if len(boxes) == 3 and boxes[0] == boxes[1] == boxes[2]:
            break
        page.wait_for_timeout(150)
    locator.click()


def page_state(page) -> str:
    """What the page and its server showed (for a failure message): script state, URL, text, the server's log."""
    state = page.evaluate("() => document.querySelector(\"[data-testid='stApp']\")?.getAttribute('data-test-script-state')")
    text = page.locator("body").inner_text()[:3000]
    log = Server.latest.log.read_text()[-3000:] if Server.latest else ""
    return f"script state {state}, url {page.url}\n--- page text ---\n{text}\n--- server log ---\n{log}"


def result_cards(page) -> list[tuple[int, float]]:
    text = page.locator("section.main, [data-testid='stMain']").first.inner_text()
    return [(int(r), float(d)) for r, d in RESULT.findall(text)]


CARD_LAYOUT = """() => {
    const cards = [...document.querySelectorAll("[class*='st-key-card_']")];
    const bad = [];
    for (const card of cards) {
        const p = card.querySelector("[data-testid='stMarkdownContainer'] p");
        const lines = Math.round(p.getBoundingClientRect().height / parseFloat(getComputedStyle(p).lineHeight));
        if (lines !== 3 || p.scrollWidth > p.clientWidth + 1) bad.push(`figures: ${p.innerText} (${lines} lines)`);
        for (const b of card.querySelectorAll("button")) {
            const label = b.querySelector("p");
            if (label && label.innerText && label.scrollWidth > label.clientWidth + 1) bad.push(`button: ${label.innerText}`);
        }
    }
    return {cards: cards.length, bad};
}"""


def check_cards_read_well(page, name: str) -> None:
    """At 1280 and 1500 px: rank, distance and cosine one line each, no overflow, button labels not cut."""
    for width in (1280, 1500):
        page.set_viewport_size({"width": width, "height": 1200})
        page.wait_for_timeout(500)
        layout = page.evaluate(CARD_LAYOUT)
        page.locator("[class*='st-key-card_']").first.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"))
        assert layout["cards"] == 8 and layout["bad"] == [], (width, layout)
    page.set_viewport_size({"width": 1500, "height": 1200})
    page.wait_for_timeout(500)  # the page lays itself out again at the new width
    settled(page)


def map_point(page, row: int) -> tuple[float, float]:
    """Screen position of the map point whose customdata is ``row`` (scrolled into view)."""
    plot = page.locator(".imgsim-plot").first
    plot.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    return tuple(plot.evaluate(
        """(d, row) => { const xa = d._fullLayout.xaxis, ya = d._fullLayout.yaxis, box = d.getBoundingClientRect();
             for (const t of d._fullData) { const i = (t.customdata || []).indexOf(row);
               if (i >= 0) return [box.left + xa._offset + xa.l2p(t.x[i]), box.top + ya._offset + ya.l2p(t.y[i])]; }
             return null; }""", row))


CARD_ROWS = """() => [...document.querySelectorAll("[class*='st-key-card_']")]
    .map(c => Number(c.className.match(/st-key-card_\\S*_(\\d+)/)[1]))"""


def check_upload_matches_reference(page, col, upload: Path) -> None:
    """The upload's cards are the notebook's per-image path's neighbours: the same images (each card's key
    ends in its row) at the same distances, as shown (3 decimals)."""
    from imgsim.models import resnet50
    from imgsim.models.weights import Weights

    model = resnet50.build_resnet50(resnet50.resolve_weights(Weights.parse(col.index.weights["identity"])))
    shown = [(col.paths[row], d) for row, (_, d) in zip(page.evaluate(CARD_ROWS), result_cards(page), strict=True)]
    assert_reference_neighbors(shown, reference_distances(model, col, upload), tol=5e-4 + 1e-6)


def test_pick_click_map_and_upload_in_a_real_browser(browser_page, built_index, photo_dir, tmp_path):
    from imgsim.collection import Collection

    col = Collection.open(built_index)
    server = Server({"IMGSIM_INDEX": str(built_index), "IMGSIM_IMAGES": str(photo_dir), "IMGSIM_WEIGHTS": "random",
                     "IMGSIM_CACHE": str(tmp_path / "cache")}, ARTIFACTS / "server-small.log")
    page = browser_page
    try:
        page.goto(server.url)
        page.wait_for_selector(".imgsim-map[data-ready='1']")
        assert page.get_by_text("Random weights.", exact=False).first.is_visible()

        # 0. The first view is already answered: the most central image and its neighbours.
        central = col.paths[col.central_row()]
        cards = results_for(page, f"query: {central}")
        assert [r for r, _ in cards] == list(range(1, 9)) and cards[0][1] == 0.0
        assert page.get_by_text("An example to start with", exact=False).first.is_visible()
        check_cards_read_well(page, "0-first-view")

        # 1. Pick an image from the gallery: k = 8 results with distances, nearest first.
        page.get_by_text("Pick an image from the collection").click()
        click_when_still(page, page.get_by_role("button", name="r2.jpg", exact=True))
        cards = results_for(page, "query: reds/r2.jpg")
        assert [r for r, _ in cards] == list(range(1, 9))
        assert [d for _, d in cards] == sorted(d for _, d in cards) and cards[0][1] == 0.0
        page.screenshot(path=str(ARTIFACTS / "1-picked.png"), full_page=True)

        # 2. Hover shows the thumbnail; clicking a map point makes it the query.
        target = col.paths.index("blues/b4.png")
        x, y = map_point(page, target)
        page.mouse.move(x, y)
        tip = page.locator(".imgsim-tip").first
        tip.wait_for(state="visible")
        hovered = tip.inner_text().strip()  # the point under the pointer (b4, unless another lies on top of it)
        assert hovered in col.paths and hovered != "reds/r2.jpg"
        style = tip.locator(".imgsim-preview").get_attribute("style")
        assert re.search(r'background-image: url\("http://127\.0\.0\.1:\d+/app/static/cache/[0-9a-f]{32}/[0-9a-f]{12}-gen-\d{6}\.jpg"\)',
                         style), style
        page.screenshot(path=str(ARTIFACTS / "2-hover.png"))
        page.mouse.click(x, y)
        page.get_by_text(f"query: {hovered}").wait_for()
        settled(page)
        assert "q=" + hovered.replace("/", "%2F") in page.url
        page.screenshot(path=str(ARTIFACTS / "3-map-click.png"), full_page=True)

        # 3. Upload a new image: it is embedded with the model and searched.
        upload = make_photo(tmp_path / "my upload.jpg", seed=31337, size=(300, 200))
        page.locator("input[type='file']").first.set_input_files(str(upload))
        cards = results_for(page, "uploaded: my upload.jpg")
        assert len(cards) == 8 and all(d > 0 for _, d in cards)
        check_upload_matches_reference(page, col, upload)
        page.screenshot(path=str(ARTIFACTS / "4-upload.png"), full_page=True)
        assert "Traceback" not in page.content()
    finally:
        server.stop()


def test_first_run_indexes_the_demo_collection_with_progress(browser_page, tmp_path):
    """The first-run promise: a fresh cache, IMGSIM_WEIGHTS=random, the demo collection indexed in the page.

    Issue 11: a second visitor and a reload during the run attach to the same server-side job (one run, the
    same live progress), and both pages show the collection when it commits, without a manual reload.
    """
    server = Server({"IMGSIM_WEIGHTS": "random", "IMGSIM_CACHE": str(tmp_path / "cache")},
                    ARTIFACTS / "server-demo.log")
    page = browser_page
    other = page.context.browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    other.set_default_timeout(90_000)
    job = re.compile(r"Indexing job #\d+, started \d\d:\d\d:\d\d UTC")
    try:
        page.goto(server.url)
        page.get_by_text(re.compile(r"Extracting features: \d+ / 373")).first.wait_for(timeout=120_000)
        page.screenshot(path=str(ARTIFACTS / "demo-indexing.png"))
        first_job = job.search(page.get_by_text(job).first.inner_text()).group(0)
        other.goto(server.url)  # a second visitor during the run
        other.get_by_text(re.compile(r"Extracting features: \d+ / 373")).first.wait_for(timeout=60_000)
        assert job.search(other.get_by_text(job).first.inner_text()).group(0) == first_job
        page.reload()  # the first visitor reloads: the run goes on, it does not restart
        page.get_by_text(job).first.wait_for(timeout=60_000)
        assert job.search(page.get_by_text(job).first.inner_text()).group(0) == first_job
        assert "Another imgsim run" not in page.content() + other.content()
        page.wait_for_selector(".imgsim-map[data-ready='1']", timeout=600_000)  # 373 images on a shared CPU
        other.wait_for_selector(".imgsim-map[data-ready='1']", timeout=60_000)  # no manual reload needed
        assert "Another imgsim run" not in other.content()
        # The first view answers an example query (the tiger) without a click.
        cards = results_for(page, "query: mammals/tiger.jpg")
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / "demo-search.png"))
        assert [r for r, _ in cards] == list(range(1, 9))
        assert page.get_by_text("An example to start with", exact=False).first.is_visible()
        # The gallery's filter still finds an image to search with.
        page.get_by_text("Pick an image from the collection").click()
        page.get_by_placeholder("e.g. tiger, fruit/").fill("zebra")
        page.keyboard.press("Enter")
        click_when_still(page, page.get_by_role("button", name="zebra.jpg", exact=True))
        cards = results_for(page, "query: mammals/zebra.jpg")
        assert [r for r, _ in cards] == list(range(1, 9))
        assert server.log.read_text().count("indexing job #") == 1, "one run for two visitors and a reload"
    finally:
        other.context.close()
        server.stop()


PAYLOAD = "**bold** [click here to log in](http://host/phish) ![t](http://host/track.png)"


def test_hostile_link_renders_as_text_and_a_truncated_index_does_not_kill_the_server(browser_page, index_copy,
                                                                                    photo_dir, tmp_path):
    """Issue 11: a shared link's Markdown shows as typed (no live link, no remote image); truncating the served
    vectors.npy between two interactions gives the clear message, and the server stays up (no SIGBUS)."""
    import urllib.parse

    server = Server({"IMGSIM_INDEX": str(index_copy), "IMGSIM_IMAGES": str(photo_dir), "IMGSIM_WEIGHTS": "random",
                     "IMGSIM_CACHE": str(tmp_path / "cache")}, ARTIFACTS / "server-hostile.log")
    page = browser_page
    remote = []
    page.on("request", lambda r: remote.append(r.url) if urllib.parse.urlparse(r.url).hostname == "host" else None)
    try:
        page.goto(server.url + "?q=" + urllib.parse.quote(PAYLOAD))
        page.get_by_text("is not in this collection").first.wait_for()
        settled(page)
        alert = page.get_by_text("is not in this collection").first.inner_text()
        assert PAYLOAD in alert.replace("\u2060", "")  # the visitor sees exactly what the link carried
        assert page.locator("a[href*='phish']").count() == 0 and page.locator("img[src*='track']").count() == 0
        assert not remote
        page.screenshot(path=str(ARTIFACTS / "hostile-link.png"))

        page.goto(server.url + "?q=reds%2Fr1.jpg")
        results_for(page, "query: reds/r1.jpg")
        generation = (index_copy / "CURRENT").read_text().strip()
        with open(index_copy / generation / "vectors.npy", "r+b") as fh:
            fh.truncate(128)
        page.get_by_role("button", name=re.compile("Similar")).first.click()  # the next interaction
        page.get_by_text("is truncated or altered").first.wait_for()
        assert server.proc.poll() is None, "the server died"
        assert urllib.request.urlopen(server.url + "_stcore/health", timeout=5).read() == b"ok"
        assert str(index_copy) not in page.content()
        page.screenshot(path=str(ARTIFACTS / "truncated-index.png"))
    finally:
        server.stop()
