"""A real index of N synthetic images, built by the same code as ``imgsim index`` minus extraction.

    python bench/scale.py --n 1000000 --dims 2048 --out DIR [--json] [--add 1000] [--search ann|exact]
                          [--data clustered|features] [--target 0.95] [--measure-only]

Vectors (``--data``): ``clustered`` (default) are easy synthetic unit vectors (non-negative, 64 latent
dimensions, 2,000 tight clusters, a little isotropic noise); ``features`` are shaped like pooled CNN features
(ReLU of a Gaussian whose covariance has a power-law spectrum over 300 latent dimensions mixed into ``--dims``,
L2-normalised, no clusters), on which a fixed operating point loses recall. They are written chunk by chunk
straight into a new index generation; paths are synthetic relative paths (``b012/img_0000042.jpg``) whose
files do not exist (the app shows placeholders). Then the derived data (PCA, ANN index tuned for recall@10
``--target`` as ``imgsim index --recall`` tunes it, neighbour graph, map, recall) come from
``imgsim.build.derive`` and the generation is committed with ``GenerationWriter.commit`` exactly as
``imgsim index`` does.

Measured through ``Collection`` (what the dashboard calls), k = 10, one query at a time: out-of-sample
queries (new vectors from the same distribution, not in the index; ``query_ms_*``,
``recall_at_10_out_of_sample``) and indexed rows (``indexed_query_ms_*``, ``recall_at_10``), against brute
force in the same run, at the operating point the build recorded; then, for an ANN index, the same queries
again at the fixed point every index used before tuning (``fixed_point``: 24 cells probed, 100 candidates).
``--add`` then adds that many images through ``imgsim.build._write`` (the incremental path, which
re-measures recall and re-tunes when it drifted). DIR opens in the app: ``IMGSIM_INDEX=DIR streamlit run app.py``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from common import machine, table

from imgsim import build
from imgsim.search import RECALL_TARGET, choose_method
from imgsim.store import generations as store
from imgsim.search import tuning
from imgsim.search.ann import AnnSearch, exact_kneighbors, recall_at_k
from imgsim.collection import Collection


def synthetic_chunks(n: int, d: int, seed: int = 0, clusters: int = 2000, latent: int = 64, spread: float = 0.5,
                     noise: float = 0.02, chunk: int = 8192, sample_seed: int | None = None):
    """Yield (start, vectors) chunks of clustered unit vectors, float32, never all in memory.

    ``seed`` fixes the clusters; ``sample_seed`` (default: the same) draws the points, so later additions
    and out-of-sample queries come from the same distribution without repeating earlier points.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, latent)).astype(np.float32)
    mixing = rng.normal(size=(latent, d)).astype(np.float32) / np.sqrt(latent)
    if sample_seed is not None:
        rng = np.random.default_rng(sample_seed)
    labels = rng.integers(0, clusters, n)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        z = centres[labels[start:start + m]] + spread * rng.standard_normal(size=(m, latent), dtype=np.float32)
        x = z @ mixing + noise * rng.standard_normal(size=(m, d), dtype=np.float32)
        np.maximum(x, 0, out=x)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield start, x


def feature_chunks(n: int, d: int, seed: int = 0, latent: int = 300, alpha: float = 1.0, chunk: int = 8192,
                   sample_seed: int | None = None):
    """Yield (start, vectors) chunks shaped like pooled CNN features, float32, never all in memory.

    A Gaussian whose covariance has eigenvalues ``i ** -alpha`` over ``latent`` dimensions, mixed into ``d``
    by a fixed random matrix, then ReLU (non-negative, about half the values 0) and L2 normalisation: a
    smooth, heavy-tailed spread with no clusters, so neighbours are far and near-equidistant and the top
    PCA coordinates hold only part of each distance. ``seed`` fixes the mixing; ``sample_seed`` draws points.
    """
    rng = np.random.default_rng(seed)
    spectrum = np.arange(1, latent + 1, dtype=np.float32) ** (-alpha / 2)
    mixing = rng.normal(size=(latent, d)).astype(np.float32) * spectrum[:, None]
    if sample_seed is not None:
        rng = np.random.default_rng(sample_seed)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = rng.standard_normal(size=(m, latent), dtype=np.float32) @ mixing
        np.maximum(x, 0, out=x)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield start, x


DATA = {"clustered": synthetic_chunks, "features": feature_chunks}
#: Draws out-of-sample queries: neither the index (the default draw) nor ``--add`` (7) repeat them.
QUERY_SEED = 12345


def synthetic_path(i: int, prefix: str = "img") -> str:
    """Folders of 10,000 by arrival (unrelated to the clusters, like photos filed by date); sorted by ``i``."""
    return f"b{i // 10000:03d}/{prefix}_{i:07d}.jpg"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--dims", type=int, default=2048)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--search", choices=["exact", "ann"], default=None, help="default: ann above 50,000")
    ap.add_argument("--queries", type=int, default=200, help="ANN queries timed (one at a time)")
    ap.add_argument("--exact-queries", type=int, default=20, help="brute-force queries timed (one at a time)")
    ap.add_argument("--add", type=int, default=1000, help="images added afterwards through the incremental path")
    ap.add_argument("--measure-only", action="store_true",
                    help="skip building: measure queries, recall and exact search on the index already in --out "
                         "(pass the --data it was built with: out-of-sample queries come from it)")
    ap.add_argument("--data", choices=sorted(DATA), default="clustered",
                    help="clustered: easy, tight clusters; features: shaped like pooled CNN features")
    ap.add_argument("--target", type=float, default=RECALL_TARGET,
                    help="recall@10 the build tunes for (imgsim index --recall)")
    args = ap.parse_args()
    out: Path = args.out
    stages: dict[str, float] = {}
    log = (lambda *a: print(*a, file=sys.stderr, flush=True))
    pooling = {2048: "avg", 100352: "flatten"}.get(args.dims, "avg")
    if not args.measure_only:
        if out.exists():
            shutil.rmtree(out)
        build_synthetic(args, out, stages, log, pooling)
    else:
        args.n = store.load_index(out).count
    result = measure(args, out, stages, pooling, log)
    if args.add:
        add_images(args, out, stages, result)
    result["stages"] = {k: round(v, 2) for k, v in stages.items()}
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    result["machine"] = machine()
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0


def build_synthetic(args, out: Path, stages: dict, log, pooling: str) -> None:
    """Vectors and manifest written as `imgsim index` writes them, then the same derived data."""

    # 1. vectors and manifest, written as `imgsim index` writes them (minus decoding and the model).
    t = time.perf_counter()
    writer = store.GenerationWriter(out, args.n, args.dims)
    paths: list = [None] * args.n
    for start, x in DATA[args.data](args.n, args.dims):
        writer.vectors[start:start + len(x)] = x
        paths[start:start + len(x)] = [synthetic_path(start + i) for i in range(len(x))]
    stages["synthetic_vectors"] = time.perf_counter() - t
    log(f"vectors written: {stages['synthetic_vectors']:.1f} s")

    # 2. derived data: the same function `imgsim index` calls after extraction.
    t = time.perf_counter()
    method = choose_method(args.search, None, args.n)
    blob, offsets = store.pack_blobs([b""] * args.n)  # no previews: the files do not exist
    writer.save_array("thumb_blob", blob)
    writer.save_array("thumb_offsets", offsets)

    def progress(stage, done, total):
        if total and done == total or total is None:
            log(f"  {stage} {done}/{total} at {time.perf_counter() - t:.0f} s")

    root = out.resolve().with_name(out.name + "-images")  # the (empty) collection folder the app opens
    root.mkdir(parents=True, exist_ok=True)
    meta = {"backbone": "resnet50", "pooling": pooling, "root": str(root),
            "weights": {"mode": "random", "identity": None, "label": f"synthetic {args.data} vectors (bench/scale.py)",
                        "path": None, "seed": 0},
            "created": store.now_iso(), "updated": store.now_iso(), "ignored": 0, "graph_k": None}
    meta.update(build.derive(writer, progress, method, recall_target=args.target))
    entries = store.Manifest(paths, np.zeros(args.n, dtype=store.Manifest.DTYPE))
    entries.table["sha256"] = [f"{i:064x}".encode() for i in range(args.n)]
    writer.commit(meta, entries, [])
    stages["derive_and_commit"] = time.perf_counter() - t
    for name, sec in (meta.get("search") or {}).get("seconds", {}).items():
        stages[f"derive.{name}"] = sec
    del paths, entries, writer


def measure(args, out: Path, stages: dict, pooling: str, log) -> dict:
    """Open as the dashboard does, then query one at a time at the recorded operating point and, for an ANN
    index, at the fixed point used before tuning; recall and exact search in the same run."""
    t = time.perf_counter()
    col = Collection.open(out)
    col.search  # noqa: B018  (loads the search structures, as the first query would)
    stages["open_index"] = time.perf_counter() - t
    vectors = col.index.vectors
    rng = np.random.default_rng(1)
    rows = np.sort(rng.choice(args.n, args.queries, replace=False))
    fresh = np.concatenate([x for _, x in DATA[args.data](args.queries, args.dims, sample_seed=QUERY_SEED)])
    t = time.perf_counter()
    truth = exact_kneighbors(vectors, np.concatenate([np.asarray(vectors[rows]), fresh]), 10).indices
    stages["recall_ground_truth"] = time.perf_counter() - t
    col.neighbors_of_row(int(rows[0]), 10)
    recorded = _at_point(col, rows, fresh, truth)
    exact_times = []
    for r in rows[:args.exact_queries]:
        t0 = time.perf_counter()
        exact_kneighbors(vectors, np.asarray(vectors[int(r)])[None], 10)
        exact_times.append(time.perf_counter() - t0)
    gen_dir = out / col.index.generation
    files = {p.name: p.stat().st_size for p in gen_dir.iterdir()}
    built = col.index.meta.get("search") or {}
    result = {
        "n": args.n, "dims": args.dims, "data": args.data, "pooling": pooling, "search": col.search_method,
        "operating_point": {key: built.get(key) for key in ("n_probe", "candidates", "graph_candidates",
                                                             "graph_n_probe", "target", "latency_budget_ms", "met",
                                                             "reason")},
        **recorded,
        "exact_query_ms_p50": round(float(np.percentile(exact_times, 50)) * 1e3, 3) if exact_times else None,
        "recall_at_10_recorded_at_build": built.get("recall_at_10"),
        "recall_at_10_out_of_sample_recorded_at_build": built.get("recall_at_10_out_of_sample"),
        "query_ms_p50_recorded_at_build": built.get("query_ms_p50"),
        "graph_recall_at_10_recorded_at_build": built.get("graph_recall_at_10"),
        "bytes_per_image": round(sum(files.values()) / args.n, 1),
        "bytes_per_image_by_file": {k: round(v / args.n, 1) for k, v in sorted(files.items())},
    }
    result["speedup_vs_exact"] = (round(result["exact_query_ms_p50"] / result["query_ms_p50"], 1)
                                  if result["exact_query_ms_p50"] else None)
    if col.search_method == "ann":
        fixed = AnnSearch()
        tuning.set_operating_point(col.search, fixed.n_probe, fixed.candidates)
        result["fixed_point"] = {"n_probe": fixed.n_probe, "candidates": fixed.candidates,
                                 **_at_point(col, rows, fresh, truth)}
        log(_comparison(result))
        log(f"neighbour graph: recall@10 {built.get('graph_recall_at_10')} at build "
            f"({built.get('graph_candidates')} candidates, {built.get('graph_n_probe')} cells probed)")
    del col
    return result


def _at_point(col: Collection, rows: np.ndarray, fresh: np.ndarray, truth: np.ndarray) -> dict:
    """Out-of-sample and indexed queries, one at a time, at the search's current operating point."""
    times, found = [], []
    for v in fresh:
        t0 = time.perf_counter()
        res = col.neighbors_of_vector(v, 10)
        times.append(time.perf_counter() - t0)
        found.append([n.row for n in res.neighbors])
    row_times, row_found = [], []
    for r in rows:
        t0 = time.perf_counter()
        res = col.neighbors_of_row(int(r), 10)
        row_times.append(time.perf_counter() - t0)
        row_found.append([n.row for n in res.neighbors])
    ms = lambda ts, q: round(float(np.percentile(ts, q)) * 1e3, 3)
    return {"query_ms_p50": ms(times, 50), "query_ms_p99": ms(times, 99),
            "indexed_query_ms_p50": ms(row_times, 50), "indexed_query_ms_p99": ms(row_times, 99),
            "recall_at_10": round(recall_at_k(np.array(row_found), truth[:len(rows)]), 4),
            "recall_at_10_out_of_sample": round(recall_at_k(np.array(found), truth[len(rows):]), 4)}


def _comparison(result: dict) -> str:
    """The operating point tuned at build against the fixed one used before, as a Markdown table."""
    rows = []
    for name, r, point in (("tuned at build", result, result["operating_point"]),
                           ("fixed (before tuning)", result["fixed_point"], result["fixed_point"])):
        rows.append([name, point["n_probe"], point["candidates"], r["recall_at_10_out_of_sample"], r["recall_at_10"],
                     r["query_ms_p50"], r["query_ms_p99"], r["indexed_query_ms_p50"]])
    return table(["point", "n_probe", "candidates", "recall@10 out-of-sample", "recall@10 self-query",
                  "p50 ms", "p99 ms", "indexed p50 ms"], rows)


def add_images(args, out: Path, stages: dict, result: dict) -> None:
    """+N images through the incremental path of `imgsim index`."""
    rng = np.random.default_rng(2)
    t = time.perf_counter()
    old = store.load_index(out)
    rows_map = {p: (None, i) for i, p in enumerate(old.paths)}
    add_entries = {}
    for start, x in DATA[args.data](args.add, args.dims, sample_seed=7, chunk=args.add):
        for i, v in enumerate(x):
            rel = synthetic_path(int(rng.integers(0, args.n)), prefix=f"new{i:04d}")
            rows_map[rel] = (store.Entry(rel, 0, 0, f"{args.n + i:064x}"), v)
            add_entries[rel] = b""
    order = sorted(rows_map)
    manifest = old.entries
    for p in order:  # old entries are materialised only for the rows kept, as `imgsim index` does
        if rows_map[p][0] is None:
            rows_map[p] = (manifest[rows_map[p][1]], rows_map[p][1])
    meta2 = dict(old.meta)
    for key in ("format", "version", "generation", "count", "dims", "arrays", "files"):
        meta2.pop(key, None)
    meta2["updated"] = store.now_iso()
    build._write(out, rows_map, [], meta2, args.dims, None, old, lambda *a: None, add_entries, old.root,
                 method=choose_method(None, old.meta, len(rows_map)))
    stages[f"add_{args.add}"] = time.perf_counter() - t
    after = store.load_index(out)
    result["after_add"] = {"count": after.count, "search": after.meta.get("search")}


if __name__ == "__main__":
    raise SystemExit(main())
