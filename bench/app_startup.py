"""Dashboard responsiveness with a 5,000-image index: start-up to first interactive render, server time
of one rerun after a click, and the server's memory.

    python bench/app_startup.py [--n 5000] [--pooling flatten]

The index holds synthetic vectors (bench/common.py) and file names without files, so thumbnails show
placeholders; everything else (index load, search, map, neighbours) is the real code path.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from common import REPO, clustered_unit_vectors, machine, table

from imgsim.store import generations as store
from imgsim.search.exact import derive_arrays
from imgsim.models.resnet50 import POOLINGS


def make_index(root: Path, index_dir: Path, n: int, pooling: str) -> None:
    dims = POOLINGS[pooling]
    writer = store.GenerationWriter(index_dir, n, dims)
    writer.vectors[:] = clustered_unit_vectors(n, dims, seed=3)
    meta = {"backbone": "resnet50", "pooling": pooling, "root": str(root), "created": store.now_iso(),
            "updated": store.now_iso(), "ignored": 0,
            "weights": {"mode": "random", "identity": "random:0", "path": None, "seed": 0,
                        "label": "random (seed 0) - similarities are not meaningful"}}
    meta.update(derive_arrays(writer, lambda *a: None))
    entries = [store.Entry(f"group{i * 20 // n:02d}/img{i:05d}.jpg", 1000, 0, f"{i:064x}") for i in range(n)]
    writer.commit(meta, entries, [])  # names sort in row order, as a real index's do


def rss_mib(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status", encoding="utf-8"))
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


REDRAW_JS = """async (d) => {
    const x = d._fullLayout.xaxis.range.slice(), y = d._fullLayout.yaxis.range.slice(), out = [];
    const frame = () => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    for (let i = 0; i < 12; i++) {
        const f = i % 4 === 3 ? 1 : 0.5 + 0.1 * (i % 4), cx = (x[0] + x[1]) / 2 + (i % 2 ? 1 : -1) * (x[1] - x[0]) * 0.1;
        const cy = (y[0] + y[1]) / 2, hx = (x[1] - x[0]) * f / 2, hy = (y[1] - y[0]) * f / 2;
        const t = performance.now();
        await window.Plotly.relayout(d, {"xaxis.range": [cx - hx, cx + hx], "yaxis.range": [cy - hy, cy + hy]});
        await frame();
        out.push(performance.now() - t);
    }
    await window.Plotly.relayout(d, {"xaxis.range": x, "yaxis.range": y});
    return out; }"""


def map_redraw_ms(page) -> list[float]:
    """Browser time of 12 zoom and pan steps on the app's map (Plotly.relayout until the frame is painted)."""
    return page.locator(".imgsim-plot").first.evaluate(REDRAW_JS)


def bare_redraw_ms(browser, n: int, trace_type: str) -> list[float]:
    """The same steps on a bare Plotly scatter of n points: the floor for WebGL, and SVG for comparison."""
    import plotly

    page = browser.new_page(viewport={"width": 1500, "height": 1200})
    page.set_content('<div id="d" style="width:600px;height:560px"></div>')
    page.add_script_tag(path=str(Path(plotly.__file__).parent / "package_data" / "plotly.min.js"))
    xy = np.random.default_rng(0).normal(size=(n, 2))
    page.evaluate("""async ([x, y, type]) => { await window.Plotly.newPlot(document.getElementById("d"),
        [{type: type, mode: "markers", x: x, y: y, marker: {size: 6}}], {margin: {l: 0, r: 0, t: 0, b: 0}}); }""",
                  [xy[:, 0].tolist(), xy[:, 1].tolist(), trace_type])
    out = page.locator("#d").evaluate(REDRAW_JS)
    page.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--pooling", choices=sorted(POOLINGS), default="flatten")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root, index_dir = tmp / "images", tmp / "synthetic.imgsim"
        root.mkdir()
        t0 = time.perf_counter()
        make_index(root, index_dir, args.n, args.pooling)
        build_s = time.perf_counter() - t0
        env = {**os.environ, "IMGSIM_INDEX": str(index_dir), "IMGSIM_IMAGES": str(root), "IMGSIM_WEIGHTS": "random",
               "IMGSIM_CACHE": str(tmp / "cache")}
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}/"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--use-gl=swiftshader", "--enable-unsafe-swiftshader",
                "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1500, "height": 1200})
            page.set_default_timeout(300_000)
            start = time.perf_counter()  # the browser is already open: only the server's start is timed
            proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                     "--server.headless", "true"], cwd=REPO, env=env,
                                    stdout=open(tmp / "server.log", "w"), stderr=subprocess.STDOUT)
            try:
                while True:
                    try:
                        if urllib.request.urlopen(url + "_stcore/health", timeout=1).read() == b"ok":
                            break
                    except OSError:
                        time.sleep(0.05)
                health_s = time.perf_counter() - start
                page.goto(url + "?q=group00/img00000.jpg")
                page.get_by_text("query: group00/img00000.jpg").wait_for()
                results_s = time.perf_counter() - start
                page.wait_for_selector(".imgsim-map[data-ready='1']")
                first_render_s = time.perf_counter() - start
                rss_first = rss_mib(proc.pid)
                redraws = map_redraw_ms(page)
                clicks = []
                for row in (17, 2345, 4001, 999, 3210):
                    plot = page.locator(".imgsim-plot").first
                    plot.scroll_into_view_if_needed()
                    xy = plot.evaluate("""(d, row) => { const xa=d._fullLayout.xaxis, ya=d._fullLayout.yaxis,
                        b=d.getBoundingClientRect(); for (const t of d._fullData) { const i=(t.customdata||[]).indexOf(row);
                        if (i >= 0) return [b.left+xa._offset+xa.l2p(t.x[i]), b.top+ya._offset+ya.l2p(t.y[i])]; } }""", row)
                    page.mouse.move(*xy)  # as a person does: the point under the pointer is what a click picks
                    tip = page.locator(".imgsim-tip").first
                    tip.wait_for(state="visible")
                    target = tip.inner_text().strip()
                    t1 = time.perf_counter()
                    page.mouse.click(*xy)
                    page.get_by_text(f"query: {target}").wait_for()
                    clicks.append(time.perf_counter() - t1)
                rss_after = rss_mib(proc.pid)
                bare_gl, bare_svg = (bare_redraw_ms(browser, args.n, t) for t in ("scattergl", "scatter"))
            finally:
                proc.terminate()
                proc.wait()
                browser.close()

        # Server time of one rerun after a click, measured in-process (no browser, no network).
        from streamlit.testing.v1 import AppTest

        os.environ.update({k: env[k] for k in ("IMGSIM_INDEX", "IMGSIM_IMAGES", "IMGSIM_WEIGHTS", "IMGSIM_CACHE")})
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
        at.query_params["q"] = "group00/img00000.jpg"
        at.run()
        reruns = []
        for row in (11, 2222, 4444, 777, 3333, 1500, 60):
            at.session_state["search_map"] = {"clicked": row, "selection": []}
            t1 = time.perf_counter()
            at.run()
            reruns.append(time.perf_counter() - t1)
            assert not at.exception, at.exception

    print(f"Dashboard with N={args.n:,} {args.pooling} vectors ({POOLINGS[args.pooling]:,}-D, synthetic); {machine()}")
    print(table(["measure", "value"], [
        ["index build for the benchmark (PCA, neighbour graph, t-SNE)", f"{build_s:.1f} s"],
        ["process start to /_stcore/health ok", f"{health_s:.2f} s"],
        ["process start to the page with the query's results", f"{results_s:.2f} s"],
        [f"process start to the map drawn ({args.n:,} WebGL points, software GL)", f"{first_render_s:.2f} s"],
        ["map zoom/pan redraw in the browser (median / max of 12)",
         f"{statistics.median(redraws):.0f} / {max(redraws):.0f} ms"],
        ["  the same on a bare Plotly WebGL scatter of as many points (the floor)",
         f"{statistics.median(bare_gl):.0f} / {max(bare_gl):.0f} ms"],
        ["  the same on a bare Plotly SVG scatter (what WebGL avoids)",
         f"{statistics.median(bare_svg):.0f} / {max(bare_svg):.0f} ms"],
        ["click on a map point to new results drawn, in Chromium (median of 5)",
         f"{statistics.median(clicks):.2f} s"],
        ["server time of one rerun after a click (median of 7; each click reruns twice: query, then redraw)",
         f"{statistics.median(reruns) * 1000:.0f} ms"],
        ["server memory (RSS) after first render / after 5 clicks", f"{rss_first[0]:.0f} / {rss_after[0]:.0f} MiB"],
        ["server peak memory (VmHWM)", f"{rss_after[1]:.0f} MiB"],
    ]))


if __name__ == "__main__":
    main()
