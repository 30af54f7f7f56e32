"""Load check for a shared server: N browser sessions open shared links (?q=...) at once, then M sessions
upload a worst-case image (the largest accepted: 40 MP RGBA PNG) at once. Loopback only, bounded.

    python bench/load_check.py [--sessions 20] [--uploads 5] [--images 60]

Builds a random-weights index of generated photos (labelled as such: the answers are checked against the
library's own neighbours, not for meaning), starts `streamlit run app.py` on 127.0.0.1, drives Debian's
Chromium through Playwright, and reports correct answers, p50/p95 time from navigation to results, and the
server's peak resident memory (VmHWM) before and after each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from common import REPO, machine, table

sys.path.insert(0, str(REPO))
from PIL import Image  # noqa: E402

from imgsim.build import build_index  # noqa: E402
from imgsim.collection import Collection  # noqa: E402
from tests.conftest import make_photo  # noqa: E402
from tests.test_e2e_browser import CHROMIUM, Server  # noqa: E402

CARD = re.compile(r"#(\d+) · distance ([0-9.]+) · cos")


def hwm_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def one_link(browser, url: str, path: str, expected: list[float]) -> tuple[bool, float]:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(300_000)
    started = time.perf_counter()
    await page.goto(url + "?q=" + urllib.parse.quote(path))
    await page.get_by_text(f"query: {path}").first.wait_for()
    await page.wait_for_function("() => document.body.innerText.includes('#8 · distance')")
    elapsed = time.perf_counter() - started
    text = await page.locator("[data-testid='stMain']").first.inner_text()
    found = [float(d) for _, d in CARD.findall(text)]
    await context.close()
    return found == expected, elapsed


async def one_upload(browser, url: str, image: Path) -> tuple[bool, float]:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(600_000)
    await page.goto(url)
    await page.locator("input[type='file']").first.wait_for(state="attached")
    started = time.perf_counter()
    await page.locator("input[type='file']").first.set_input_files(str(image))
    await page.get_by_text(f"uploaded: {image.name}").first.wait_for()
    await page.wait_for_function("() => document.body.innerText.includes('#8 · distance')")
    elapsed = time.perf_counter() - started
    text = await page.locator("[data-testid='stMain']").first.inner_text()
    ok = len(CARD.findall(text)) == 8 and "cannot be used" not in text
    await context.close()
    return ok, elapsed


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def drive(url: str, links: list[tuple[str, list[float]]], uploads: list[Path], pid: int) -> list[list]:
    from playwright.async_api import async_playwright

    rows = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--use-gl=swiftshader", "--enable-unsafe-swiftshader"])
        warm = await one_link(browser, url, *links[0])  # first render loads the index and caches the map
        base = hwm_mb(pid)
        out = await asyncio.gather(*(one_link(browser, url, path, exp) for path, exp in links))
        times = [t for _, t in out]
        rows.append([f"{len(links)} sessions open a shared link", f"{sum(ok for ok, _ in out)}/{len(out)}",
                     f"{pct(times, 0.5):.1f}", f"{pct(times, 0.95):.1f}", f"{base:.0f}", f"{hwm_mb(pid):.0f}"])
        if uploads:
            await one_upload(browser, url, uploads[0])  # loads the model once, as the first real upload would
            base = hwm_mb(pid)
            out = await asyncio.gather(*(one_upload(browser, url, image) for image in uploads[1:]))
            times = [t for _, t in out]
            rows.append([f"{len(uploads) - 1} sessions upload a 40 MP RGBA PNG at once",
                         f"{sum(ok for ok, _ in out)}/{len(out)}", f"{pct(times, 0.5):.1f}",
                         f"{pct(times, 0.95):.1f}", f"{base:.0f}", f"{hwm_mb(pid):.0f}"])
        await browser.close()
    assert warm[0], "the warm-up query gave wrong results"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--uploads", type=int, default=5)
    parser.add_argument("--images", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "photos"
        for i in range(args.images):
            make_photo(folder / f"group{i % 4}" / f"p{i:03d}.jpg", seed=i, size=(320, 240))
        build_index(folder, tmp / "ix", weights="random")
        col = Collection.open(tmp / "ix")
        links = [(col.paths[i % col.count], [round(n.distance, 3) for n in col.neighbors_of_row(i % col.count, 8).neighbors])
                 for i in range(args.sessions)]
        uploads = []
        for i in range(args.uploads + 1):  # distinct files: a repeated upload would be answered from the cache
            path = tmp / f"worst-case-{i}.png"
            Image.new("RGBA", (8000, 5000), (10 + i, 200, 30, 128)).save(path)
            uploads.append(path)
        server = Server({"IMGSIM_INDEX": str(tmp / "ix"), "IMGSIM_IMAGES": str(folder), "IMGSIM_WEIGHTS": "random",
                         "IMGSIM_CACHE": str(tmp / "cache")}, tmp / "server.log")
        try:
            pid = server.proc.pid
            rows = asyncio.run(drive(server.url, links, uploads if args.uploads else [], pid))
            alive = server.proc.poll() is None
            rss_end = rss_mb(pid)
        finally:
            server.stop()
    print(f"Load check ({machine()}); random weights, {args.images} generated photos; loopback only")
    print(table(["phase", "correct", "p50 s to results", "p95 s to results", "server peak RSS before (MB)",
                 "server peak RSS after (MB)"], rows))
    print(f"server alive at the end: {alive}; RSS at the end {rss_end:.0f} MB")


if __name__ == "__main__":
    main()
