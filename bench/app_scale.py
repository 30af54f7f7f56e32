"""The dashboard on a large index built by bench/scale.py: time to first render, click -> new results,
map redraw, server memory.

    python bench/app_scale.py --index DIR [--clicks 5]

The index's files do not exist, so every thumbnail is a placeholder; index load, search, map and neighbour
highlighting are the real code path. Chromium with software GL, as in bench/app_startup.py.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from app_startup import map_redraw_ms, rss_mib
from common import REPO, machine, table

from imgsim.serving import mapview
from imgsim.store.generations import load_index


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", required=True, type=Path)
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    ix = load_index(args.index)
    count, first = ix.count, ix.paths[ix.count // 2]
    drawn = mapview.drawn_rows(count)
    picks = [int(drawn[i]) for i in (len(drawn) // 7, len(drawn) // 3, len(drawn) // 2, 2 * len(drawn) // 3,
                                     len(drawn) - 5)][:args.clicks]
    del ix
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as s:
        tmp = Path(tmp)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        env = {**os.environ, "IMGSIM_INDEX": str(args.index), "IMGSIM_WEIGHTS": "random",
               "IMGSIM_CACHE": str(tmp / "cache")}
        env.pop("IMGSIM_IMAGES", None)
        url = f"http://127.0.0.1:{port}/"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--use-gl=swiftshader", "--enable-unsafe-swiftshader",
                "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1500, "height": 1200})
            page.set_default_timeout(600_000)
            proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                     "--server.headless", "true"], cwd=REPO, env=env,
                                    stdout=open(tmp / "server.log", "w"), stderr=subprocess.STDOUT)
            try:
                start = time.perf_counter()
                while True:
                    try:
                        if urllib.request.urlopen(url + "_stcore/health", timeout=1).read() == b"ok":
                            break
                    except OSError:
                        time.sleep(0.05)
                health_s = time.perf_counter() - start
                t0 = time.perf_counter()
                page.goto(url + "?q=" + urllib.request.quote(first, safe=""))
                page.get_by_text(f"query: {first}").first.wait_for()
                results_s = time.perf_counter() - t0
                page.wait_for_selector(".imgsim-map[data-ready='1']")
                first_render_s = time.perf_counter() - t0
                marks = page.evaluate("""() => { const nav = performance.timeOrigin; const out = {};
                    for (const m of performance.getEntriesByType('mark')) if (m.name.startsWith('imgsim-'))
                        out[m.name] = out[m.name] || Math.round(m.startTime);
                    for (const r of performance.getEntriesByType('resource')) if (r.name.includes('plotly.min.js'))
                        out['plotly.min.js fetched'] = Math.round(r.responseEnd);
                    return out; }""")
                rss_first = rss_mib(proc.pid)
                redraws = map_redraw_ms(page)
                clicks = []
                for row in picks:
                    plot = page.locator(".imgsim-plot").first
                    plot.scroll_into_view_if_needed()
                    xy = plot.evaluate("""(d, row) => { const xa=d._fullLayout.xaxis, ya=d._fullLayout.yaxis,
                        b=d.getBoundingClientRect(); for (const t of d._fullData) {
                        const i=(t.customdata||[]).findIndex(c => (Array.isArray(c) ? c[0] : c) === row);
                        if (i >= 0) return [b.left+xa._offset+xa.l2p(t.x[i]), b.top+ya._offset+ya.l2p(t.y[i])]; } }""", row)
                    page.mouse.move(*xy)
                    tip = page.locator(".imgsim-tip").first
                    tip.wait_for(state="visible")
                    target = tip.inner_text().strip()
                    t1 = time.perf_counter()
                    page.mouse.click(*xy)
                    page.get_by_text(f"query: {target}").first.wait_for()
                    clicks.append(time.perf_counter() - t1)
                rss_after = rss_mib(proc.pid)
                log = (tmp / "server.log").read_text()
            finally:
                proc.terminate()
                proc.wait()
                browser.close()
    out = {"n": count, "health_s": round(health_s, 2), "first_results_s": round(results_s, 2),
           "first_render_s": round(first_render_s, 2), "map_points_drawn": int(len(drawn)),
           "first_render_marks_ms": marks,
           "redraw_ms_median": round(statistics.median(redraws)), "redraw_ms_max": round(max(redraws)),
           "click_to_results_s_median": round(statistics.median(clicks), 2) if clicks else None,
           "click_to_results_s_max": round(max(clicks), 2) if clicks else None,
           "rss_mib_first": round(rss_first[0]), "rss_mib_after_clicks": round(rss_after[0]),
           "rss_mib_peak": round(rss_after[1]), "machine": machine(), "server_errors": "Traceback" in log}
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(f"Dashboard on {args.index} ({count:,} images); {machine()}")
    print(table(["measure", "value"], [[k, v] for k, v in out.items()]))


if __name__ == "__main__":
    main()
