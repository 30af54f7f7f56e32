"""First-run indexing of the demo: the CLI against the dashboard's server-side job, same images, same run.

    python bench/first_run.py [--rounds 1] [--app] [--no-job]

(a) ``python -m imgsim index data/demo --index DIR --weights random --verbose`` in a subprocess;
(b) the dashboard's job path in a subprocess built like the Streamlit server: streamlit and the dashboard
    imported, the model built by ``dashboard.cached.load_model``'s call on the main (script) thread, the build
    run by :class:`imgsim.serving.jobs.JobRegistry` on its server thread, and the page's
    ``st.fragment(run_every=1.0)`` simulated by a thread that reads ``registry.get`` and renders the progress
    line once a second.

Both write fresh index folders under /tmp. Each child reports every stage change on stderr; the parent stamps
it and samples the child's per-thread CPU time (``/proc/PID/task``), so the two are timed the same way from
outside. Prints a per-stage table and, for the derived stages, the threads that used the CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DEMO, REPO, machine, table  # noqa: E402
from imgsim.progress import STAGE_LABELS  # noqa: E402

#: Stages in the order a first run reaches them; "start" is the process start, "end" its exit.
ORDER = ["start", "scan", "model_load", "extract", "save", "compress", "neighbors", "map", "end"]
LABEL_TO_STAGE = {v: k for k, v in STAGE_LABELS.items()}
CLK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) per thread name of process ``pid``, summed over threads of one name."""
    out: dict[str, float] = defaultdict(float)
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[name] += (int(fields[11]) + int(fields[12])) / CLK
    return dict(out)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far, its finished threads included."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[dict[str, float], dict[str, dict[str, float]], str]:
    """Run ``cmd``; returns when each stage began (s since start), thread CPU at each stage start, and stderr."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    marks: dict[str, float] = {"start": 0.0}
    cpu: dict[str, dict[str, float]] = {"start": {}}
    last_cpu: dict[str, float] = {}
    text: list[str] = []
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()

    def sampler() -> None:  # the child's threads, every 0.25 s, so the last sample before its exit survives
        while proc.poll() is None:
            try:
                now = dict(thread_cpu(proc.pid), **{"(process)": process_cpu(proc.pid)})
            except OSError:
                return
            last_cpu.update(now)
            time.sleep(0.25)

    threading.Thread(target=sampler, daemon=True).start()
    buf = b""
    while True:
        chunk = proc.stderr.read(256)
        if not chunk:
            break
        buf += chunk
        *parts, buf = buf.replace(b"\r", b"\n").split(b"\n")
        for raw in parts:
            line = raw.decode("utf-8", "replace")
            text.append(line)
            label = line.split(":", 1)[0].strip().rstrip("…")
            stage = LABEL_TO_STAGE.get(label)
            if stage == "model":
                stage = "model_load"
            if stage is not None and stage not in marks:
                marks[stage] = time.perf_counter() - started
                cpu[stage] = thread_cpu(proc.pid)
                cpu[stage]["(process)"] = process_cpu(proc.pid)
    proc.wait()
    reader.join()
    marks["end"] = time.perf_counter() - started
    cpu["end"] = dict(last_cpu)
    if proc.returncode:
        raise SystemExit(f"{cmd} failed ({proc.returncode}):\n" + "\n".join(text[-30:]))
    return marks, cpu, "\n".join(text) + (out[0].decode() if out and out[0] else "")


def job_child(index_dir: str) -> None:
    """The dashboard's job path in this process (see the module docstring); stage changes go to stderr."""
    import streamlit  # noqa: F401 - the server process has it loaded

    from dashboard import cached
    from imgsim.models.base import BackboneSpec
    from imgsim.serving.jobs import JobRegistry

    weights = os.environ.get("IMGSIM_WEIGHTS") or "imagenet"
    print(f"{STAGE_LABELS['model_load']}…", file=sys.stderr, flush=True)
    spec = BackboneSpec.parse(None)
    model = cached.load_model(spec.spec, weights, spec.default_pooling())  # what the script run builds
    registry = JobRegistry()
    last = [""]

    def work(progress):
        from imgsim.build import build_index

        def report(stage: str, done: int, total: int | None) -> None:
            if stage != last[0]:
                last[0] = stage
                print(f"{STAGE_LABELS.get(stage, stage)}: ", file=sys.stderr, flush=True)
            progress(stage, done, total)

        return build_index(DEMO, index_dir, weights=weights, progress=report, model_factory=lambda w, p, b: model)

    registry.start(index_dir, work)
    while True:  # the progress fragment: one registry read and one progress line a second
        snap = registry.get(index_dir)
        if not snap.running:
            break
        snap.describe()
        time.sleep(1.0)
    snap = registry.wait(index_dir)
    if snap.error is not None:
        raise snap.error
    print(f"committed={snap.result.committed}", flush=True)


def run_app(index_dir: str, env: dict[str, str]) -> tuple[dict[str, float], dict[str, dict[str, float]], str]:
    """The real dashboard: ``streamlit run app.py`` on a loopback port, one headless Chromium visitor; stages are
    read from the page's progress bar twice a second, the end is the job's committed index."""
    import socket

    from playwright.sync_api import sync_playwright

    from imgsim.store.generations import index_exists

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = Path(index_dir + ".log")
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                               "--server.address", "127.0.0.1", "--server.headless", "true"],
                              cwd=REPO, env=dict(env, IMGSIM_INDEX=index_dir), stdout=log.open("w"),
                              stderr=subprocess.STDOUT)
    marks: dict[str, float] = {"start": 0.0}
    cpu: dict[str, dict[str, float]] = {"start": {}}

    def mark(stage: str) -> None:
        if stage not in marks:
            marks[stage] = time.perf_counter() - started
            cpu[stage] = {"(process)": process_cpu(server.pid)}

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            while True:
                try:
                    page.goto(f"http://127.0.0.1:{port}/", timeout=5000)
                    break
                except Exception:  # noqa: BLE001 - the server is still starting
                    time.sleep(0.5)
            while not index_exists(index_dir):
                if server.poll() is not None:
                    raise SystemExit(f"the server died: {log.read_text()[-2000:]}")
                bars = page.locator('[data-testid="stProgress"]')
                text = bars.first.inner_text(timeout=500) if bars.count() else ""
                label = text.split(":", 1)[0].strip().rstrip("…")
                if label in LABEL_TO_STAGE:
                    mark({"model": "model_load"}.get(LABEL_TO_STAGE[label], LABEL_TO_STAGE[label]))
                time.sleep(0.5)
            mark("end")
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    return marks, cpu, log.read_text()


def stage_rows(marks: dict[str, float], cpu: dict[str, dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Wall and process CPU seconds per stage, from one stage's start to the next one's."""
    seen = sorted(marks, key=marks.get)
    return {a: (marks[b] - marks[a], cpu[b].get("(process)", 0.0) - cpu[a].get("(process)", 0.0))
            for a, b in zip(seen, seen[1:])}


def derive_threads(cpu: dict[str, dict[str, float]]) -> str:
    """The threads that used CPU from the search projection to the end, busiest first."""
    if "compress" not in cpu:
        return "-"
    a, b = cpu["compress"], cpu["end"]
    used = {k: b.get(k, 0.0) - a.get(k, 0.0) for k in b if k != "(process)"}
    top = sorted(((v, k) for k, v in used.items() if v > 0.05), reverse=True)[:5]
    return ", ".join(f"{k} {v:.1f}" for v, k in top)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1, help="CLI/job pairs to run, alternating")
    ap.add_argument("--app", action="store_true", help="also time the real app: streamlit run app.py and Chromium")
    ap.add_argument("--no-job", action="store_true", help="leave out the simulated job path (with --app: CLI and app)")
    ap.add_argument("--job-child", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job_child:
        return job_child(args.job_child)
    env = dict(os.environ, IMGSIM_WEIGHTS="random", PYTHONUNBUFFERED="1",
               IMGSIM_CACHE=tempfile.mkdtemp(prefix="imgsim-cache-"))
    print(machine())
    print(f"load before: {os.getloadavg()}")
    results: list[tuple[str, dict[str, tuple[float, float]], float, str]] = []
    paths = ["CLI"] + ([] if args.no_job else ["dashboard job"]) + (["dashboard (streamlit + browser)"] if args.app else [])
    for r in range(args.rounds):
        for name in paths:
            ix = tempfile.mkdtemp(prefix="imgsim-first-run-")
            shutil.rmtree(ix)
            cmd = ([sys.executable, "-m", "imgsim", "index", str(DEMO), "--index", ix, "--weights", "random",
                    "--verbose"] if name == "CLI" else [sys.executable, __file__, "--job-child", ix])
            marks, cpu, _ = run_app(ix, env) if name.startswith("dashboard (") else run_child(cmd, env)
            results.append((name, stage_rows(marks, cpu), marks["end"], derive_threads(cpu)))
            shutil.rmtree(ix, ignore_errors=True)
            print(f"round {r + 1} {name}: {marks['end']:.1f} s", flush=True)
    print(f"load after: {os.getloadavg()}")
    names = {"start": "start-up (imports)", "scan": "scan", "model_load": "model", "extract": "extraction",
             "save": "write", "compress": "search projection", "neighbors": "neighbour graph", "map": "t-SNE map"}
    per = results
    stages = [s for s in ORDER[:-1] if any(s in p for _, p, _, _ in per)]
    headers = ["stage (wall / process CPU)"] + [n for n, *_ in per]
    cell = lambda w, c: f"{w:.1f} s / {c:.1f} s"
    rows = [[names[s]] + [cell(*p.get(s, (0.0, 0.0))) for _, p, _, _ in per] for s in stages]
    derived = [tuple(sum(p.get(s, (0.0, 0.0))[i] for s in ("compress", "neighbors", "map")) for i in (0, 1))
               for _, p, _, _ in per]
    rows.append(["derived (projection + graph + map)"] + [cell(*d) for d in derived])
    rows.append(["**total**"] + [f"**{e:.1f} s**" for _, _, e, _ in per])
    print(table(headers, rows))
    print()
    for n, _, _, t in per:
        print(f"{n}: CPU s by thread during the derived stages: {t}")
    step = len(paths)
    for i in range(0, len(per), step):
        for j in range(i + 1, i + step):
            print(f"round {i // step + 1}: {per[j][0]} / CLI = {per[j][2] / per[i][2]:.2f}x, "
                  f"derived {derived[j][0] / max(derived[i][0], 1e-9):.2f}x")
    shutil.rmtree(env["IMGSIM_CACHE"], ignore_errors=True)


if __name__ == "__main__":
    main()
