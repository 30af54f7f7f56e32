"""HTTP API and MCP server under load, next to the in-process query they wrap. Loopback only, bounded loops.

    python bench/api_load.py [--index DIR] [--requests 600] [--clients 1,10,50] [-k 10]

Without --index, builds a random-weights (avg pooling) index of the demo collection in a temporary folder (the
timings do not depend on what the vectors mean). Starts `python -m imgsim serve INDEX` on 127.0.0.1, then for
each number of concurrent clients sends ``--requests`` ``GET /v1/similar?path=...&k=K`` in all over keep-alive
connections (one per client thread, random indexed paths) and reports p50/p99 latency and throughput. The same
run times ``Collection.neighbors_of_row`` in this process (what the endpoint does without HTTP), reads the
server's peak resident memory (VmHWM), and times MCP ``similar_to`` round trips over stdio
(`python -m imgsim mcp INDEX`, the SDK's client). The client threads share the machine with the server.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

from common import DEMO, REPO, machine, table

sys.path.insert(0, str(REPO))
from imgsim.collection import Collection  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def in_process(col: Collection, k: int, n: int) -> list[float]:
    """Milliseconds per ``neighbors_of_row`` (the stored vector's k nearest), random rows."""
    rng = random.Random(1)
    col.neighbors_of_row(0, k)  # warm: search structures built, arrays paged in
    times = []
    for _ in range(n):
        start = time.perf_counter()
        col.neighbors_of_row(rng.randrange(col.count), k)
        times.append(1000 * (time.perf_counter() - start))
    return times


def load(port: int, paths: list[str], k: int, clients: int, requests: int) -> tuple[list[float], float, int]:
    """``requests`` similar queries from ``clients`` threads: latencies (ms), wall seconds, failures."""
    per_client = max(1, requests // clients)
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        barrier.wait()
        for _ in range(per_client):
            url = f"/v1/similar?path={quote(rng.choice(paths))}&k={k}"
            start = time.perf_counter()
            try:
                conn.request("GET", url)
                response = conn.getresponse()
                body = response.read()
                ok = response.status == 200 and len(json.loads(body)["neighbors"]) == min(k, len(paths))
            except (OSError, http.client.HTTPException, ValueError):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            mine.append(1000 * (time.perf_counter() - start))
            if not ok:
                with lock:
                    failures[0] += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - start, failures[0]


def mcp_round_trips(index: Path, paths: list[str], k: int, calls: int) -> tuple[float, list[float]]:
    """Seconds to start ``imgsim mcp`` and list its tools, and milliseconds per ``similar_to`` call."""
    import anyio
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=sys.executable, args=["-m", "imgsim", "mcp", str(index)],
                                   env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=str(REPO))
    rng = random.Random(2)

    async def go():
        start = time.perf_counter()
        async with Client(params) as client:
            await client.list_tools()
            started = time.perf_counter() - start
            times = []
            for _ in range(calls):
                t0 = time.perf_counter()
                result = await client.call_tool("similar_to", {"path": rng.choice(paths), "k": k})
                assert not result.is_error, result.content[0].text
                times.append(1000 * (time.perf_counter() - t0))
            return started, times
    return anyio.run(go)


def demo_index(folder: Path) -> Path:
    index = folder / "demo.imgsim"
    subprocess.run([sys.executable, "-m", "imgsim", "index", str(DEMO), "--index", str(index), "--weights", "random",
                    "--pooling", "avg", "--quiet"], cwd=REPO, check=True)
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, help="an existing index (default: build one of the demo collection)")
    parser.add_argument("--requests", type=int, default=600, help="requests per concurrency level")
    parser.add_argument("--clients", default="1,10,50", help="concurrency levels, comma-separated")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--mcp-calls", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        index = args.index or demo_index(Path(tmp))
        col = Collection.open(index)
        paths = list(col.paths)
        local = in_process(col, args.k, 500)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "imgsim", "serve", str(index), "--port", str(port)],
                                  cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("GET", "/v1/info")
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the server did not start")
                    time.sleep(0.2)
            load(port, paths, args.k, 1, 50)  # warm-up
            rows = [["in-process `neighbors_of_row`", "-", f"{statistics.median(local):.2f}",
                     f"{percentile(local, 99):.2f}", f"{1000 / statistics.mean(local):,.0f}", "-"]]
            for clients in (int(c) for c in args.clients.split(",")):
                latencies, seconds, failed = load(port, paths, args.k, clients, args.requests)
                rows.append(["HTTP `GET /v1/similar`", clients, f"{statistics.median(latencies):.2f}",
                             f"{percentile(latencies, 99):.2f}", f"{len(latencies) / seconds:,.0f}", failed])
            rss = peak_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(30)
        started, mcp_times = mcp_round_trips(index, paths, args.k, args.mcp_calls)
        rows.append(["MCP `similar_to` (stdio)", 1, f"{statistics.median(mcp_times):.2f}",
                     f"{percentile(mcp_times, 99):.2f}", f"{1000 / statistics.mean(mcp_times):,.0f}", 0])

    print(f"{machine()}; index: {col.count:,} images, {col.index.dims:,} dims ({col.index.pooling}, "
          f"{col.search_method} search), k = {args.k}, {args.requests} requests per level")
    print(table(["what", "clients", "p50 ms", "p99 ms", "per second", "failed"], rows))
    print(f"Server peak RSS (VmHWM) after the HTTP runs: {rss:,.0f} MB. MCP server start to tool list: "
          f"{started:.1f} s.")


if __name__ == "__main__":
    main()
