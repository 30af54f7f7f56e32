"""Command line: ``python -m imgsim index | query | dedup | info | evaluate | grid | cluster | explain | outliers
| serve | mcp``.

Every ``--json`` output is built by :mod:`imgsim.service.results`, the shapes the HTTP API and MCP server return.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from typing import Iterator, Sequence

from imgsim import __version__
from imgsim.build import BuildConfig, BuildReport, build_index
from imgsim.analysis.clusters import check_output, organise
from imgsim.collection import Collection, Neighbor
from imgsim.engines import ENGINES, make_engine
from imgsim.errors import ImgsimError
from imgsim.metadata.filters import Filter, parse_where
from imgsim.metadata.fusion import DEFAULT_WEIGHTS, parse_fusion
from imgsim.models.base import BACKBONES
from imgsim.models.resnet50 import POOLINGS
from imgsim.store.generations import index_exists
from imgsim.progress import STAGE_LABELS
from imgsim.search import METHODS
from imgsim.service.results import (cluster_dict, clusters_json, dedup_json, evaluate_json, examples_json,
                                    explain_json, filter_fields, info_dict, metadata_info, nearest_distribution,
                                    outliers_json, query_json, text_json)

RANDOM_NOTE = "Random weights: similarities are not meaningful (use ImageNet weights for real results)."
#: How an image argument is found, for the help of every command that takes one.
IMAGE_HELP = ("a file path; when no file is there, a path relative to the collection's folder (as results "
              "print them)")


class TqdmProgress:
    """Maps library progress reports to one tqdm bar per stage, on stderr."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bars: dict[str, object] = {}

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            for other in self.bars.values():
                other.close()
            self.bars.clear()
            unit = "img" if stage in ("extract", "save", "neighbors") else "it"
            bar = tqdm(total=total, desc=STAGE_LABELS.get(stage, stage), unit=unit, file=sys.stderr,
                       dynamic_ncols=True, leave=stage == "extract", bar_format=None if total else "{desc}: {elapsed}")
            self.bars[stage] = bar
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _threshold(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 2:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2, the range of distances between unit vectors (got {value})")
    return value


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m imgsim", description="Find images that look alike.")
    parser.add_argument("--version", action="version", version=f"imgsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="index a folder (incremental: only new or changed files are extracted)")
    p.add_argument("src_dir", metavar="SRC_DIR")
    p.add_argument("--index", required=True, metavar="INDEX_DIR", help="folder where the index is kept")
    p.add_argument("--weights", metavar="imagenet|random|PATH",
                   help="ImageNet weights (Keras download/cache), seeded random weights, or a local weights file "
                        "(CLIP: pretrained, the preset's own, or random); "
                        "default: the index's own, else $IMGSIM_WEIGHTS, else imagenet")
    p.add_argument("--pooling", choices=sorted(POOLINGS), help="flatten: 7x7x2048 (the reference); avg: 2048 values")
    p.add_argument("--backbone", metavar="|".join(BACKBONES).replace("clip", "clip[:PRESET_OR_DIR]"),
                   help="the model: resnet50 (default), efficientnet-lite0 (ImageNet weights installed with imgsim: "
                        "real features offline) or CLIP from keras-hub (default preset clip_vit_base_patch32, or a "
                        "local preset folder), which also allows search by text; default: the index's own")
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                   help="images per model call (default: chosen for the device: 16 on CPU, 64 on GPU)")
    p.add_argument("--rebuild", action="store_true", help="discard the existing index and extract everything again")
    p.add_argument("--search", choices=list(METHODS),
                   help="exact k-NN, or approximate (IVF) with exact re-ranking; default: ann above 50,000 images")
    p.add_argument("--recall", type=float, default=None, metavar="R",
                   help="recall@10 that approximate search is tuned to keep on queries not in the index "
                        "(default: the index's own, else 0.95)")
    p.add_argument("--allow-large", action="store_true",
                   help="index in flatten mode even when the index is estimated above 20 GB")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--engine", choices=list(ENGINES), default="local",
                   help="local: this process; ray: a Ray Data job (pip install -r requirements-ray.txt)")
    p.add_argument("--ray-address", metavar="ADDR", help="Ray cluster to run on (e.g. auto, ray://head:10001); "
                   "default: a local Ray instance")
    p.add_argument("--precision", choices=("float32", "float16"), default=None,
                   help="model arithmetic: float32 (the reference) or float16 (reduced: mixed float16 on a GPU; "
                        "on a CPU the faster of bf16 and f16, measured once per model and CPU kind); "
                        "default: the index's own, else float32")
    p.add_argument("--runtime", choices=("auto", "openvino", "keras"), default=None,
                   help="forward pass: auto (OpenVINO on CPU when installed, else Keras), openvino or keras "
                        "(default: $IMGSIM_RUNTIME, else auto)")
    p.add_argument("--verbose", action="store_true", help="print where the time went (import, model, "
                   "extraction, derived data, write)")
    p.add_argument("--metadata", metavar="FILE.csv|FILE.jsonl",
                   help="your own metadata, one row per image keyed by 'path' (relative to SRC_DIR): every other "
                        "column (captions, tags, numbers, dates) becomes searchable and filterable; replaces the "
                        "columns of an earlier file (without it, they are kept)")

    p = sub.add_parser("query", help="nearest neighbours of an image (indexed or not), or of a description (CLIP)")
    p.add_argument("index_dir", metavar="INDEX_DIR")
    p.add_argument("images", metavar="IMAGE_PATH", nargs="*",
                   help=f"one image, or several that form one 'more like these' query; each is {IMAGE_HELP}")
    p.add_argument("--not", dest="negatives", metavar="IMAGE_PATH", nargs="+", action="extend", default=[],
                   help="images the results should not look like (more like these), found like IMAGE_PATH")
    p.add_argument("--text", metavar="TEXT", help="search by describing (CLIP indexes), e.g. \"a red car at night\"")
    p.add_argument("-k", type=_positive_int, default=5, help="how many results (clamped to the collection size)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--weights", metavar="imagenet|random|PATH", help="weights for an image that is not indexed "
                   "(default: the index's own)")
    p.add_argument("--where", metavar="'FIELD OP VALUE'", action="append", default=[],
                   help="only images that pass, before similarity (repeatable, ANDed): OP one of = != < <= > >= ~ "
                        "(~: contains, any case), or FIELD in [a, b]; e.g. 'taken >= 2023-07' (see docs/metadata.md)")
    p.add_argument("--near", metavar="LAT,LON,KM", help="only images taken within KM kilometres of the point")
    p.add_argument("--max-distance", type=_threshold, metavar="D", help="drop results farther than D (0..2)")
    p.add_argument("--fusion", metavar="off|vector=W,keywords=W",
                   help="--text on a CLIP index whose images have text: how the vector and keyword (BM25) rankings "
                        "are fused by reciprocal rank (default vector=1,keywords=1; off: vectors alone)")

    p = sub.add_parser("dedup", help="groups of near-duplicate images")
    p.add_argument("index_dir", metavar="INDEX_DIR")
    p.add_argument("--threshold", type=_threshold, required=True, metavar="T", help="largest distance (0..2) in a pair")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("info", help="what an index holds")
    p.add_argument("index_dir", metavar="INDEX_DIR")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("evaluate", help="precision@k against sub-folder labels, with a random baseline")
    p.add_argument("index_dir", metavar="INDEX_DIR")
    p.add_argument("-k", type=_positive_int, default=5)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("grid", help="render the t-SNE map snapped to a grid of thumbnails as one PNG")
    p.add_argument("index_dir", metavar="INDEX_DIR")
    p.add_argument("--out", required=True, metavar="PNG")
    p.add_argument("--cell", type=_positive_int, default=64, help="pixels per thumbnail")
    p.add_argument("--max-images", type=_positive_int, default=1024)

    p = sub.add_parser("cluster", help="group the images into k clusters (albums); optionally lay them out in folders")
    p.add_argument("index_dir", metavar="INDEX_DIR")
    p.add_argument("--k", type=_positive_int, metavar="K",
                   help="number of clusters (default: the suggested k, best silhouette score on a sample)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--central", type=_positive_int, default=5, metavar="M", help="central images listed per cluster")
    p.add_argument("--out", metavar="DIR", help="new or empty folder (outside the image folder) to organise into")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--link", dest="mode", action="store_const", const="link", help="symlinks to the originals (default)")
    how.add_argument("--copy", dest="mode", action="store_const", const="copy", help="copies of the originals")

    p = sub.add_parser("explain", help="why two images are similar: each cell of the 7x7 grid")
    p.add_argument("index_dir", metavar="INDEX_DIR")
    p.add_argument("image_a", metavar="IMAGE_A", help=IMAGE_HELP)
    p.add_argument("image_b", metavar="IMAGE_B", help=IMAGE_HELP)
    p.add_argument("--json", action="store_true")
    p.add_argument("--weights", metavar="imagenet|random|PATH", help="weights when the model is needed "
                   "(default: the index's own)")

    p = sub.add_parser("outliers", help="odd ones out: the images farthest from their nearest neighbours")
    p.add_argument("index_dir", metavar="INDEX_DIR")
    p.add_argument("-n", type=_positive_int, default=20, help="how many (clamped to the collection size)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("serve", help="HTTP JSON API over an index (/v1/...; the OpenAPI page at /docs)")
    p.add_argument("index_dir", metavar="INDEX_DIR")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; any other needs "
                   "--token-file, or --insecure-no-token)")
    p.add_argument("--port", type=_positive_int, default=8600)
    p.add_argument("--token-file", metavar="FILE", help="clients must send 'Authorization: Bearer TOKEN', the token "
                   "in FILE")
    p.add_argument("--insecure-no-token", action="store_true", help="listen beyond loopback without a token "
                   "(only on a network you trust)")
    p.add_argument("--cors-origin", metavar="ORIGIN", action="append", default=[],
                   help="a browser origin allowed to call the API, e.g. https://app.example.org (repeatable; "
                        "default: none)")
    p.add_argument("--allow-host", metavar="NAME", action="append", default=[],
                   help="without a token, also answer requests whose Host is NAME, e.g. photos.lan (repeatable; "
                        "loopback names and --host always; more in IMGSIM_ALLOWED_HOSTS)")

    p = sub.add_parser("mcp", help="Model Context Protocol server over an index, on stdio (for LLM clients)")
    p.add_argument("index_dir", metavar="INDEX_DIR")
    return parser


@contextmanager
def _service_extra(command: str) -> Iterator[None]:
    """Imports of the service transports: a missing package of the ``service`` extra becomes what to install."""
    try:
        yield
    except ModuleNotFoundError as exc:
        package = (exc.name or "").partition(".")[0]
        if package in ("", "imgsim"):
            raise  # a broken installation of imgsim itself, not a missing extra
        raise ImgsimError(f"`{command}` needs the service extra, and {package} is not installed: "
                          f"pip install 'imgsim[service]' (in a checkout: pip install -r requirements.txt).") from None


def cmd_serve(args: argparse.Namespace) -> int:
    """The HTTP API, until interrupted."""
    with _service_extra("serve"):
        from imgsim.service.http import serve
    return serve(args.index_dir, host=args.host, port=args.port, token_file=args.token_file,
                 insecure_no_token=args.insecure_no_token, cors_origins=args.cors_origin,
                 allowed_hosts=args.allow_host)


def cmd_mcp(args: argparse.Namespace) -> int:
    """The MCP server on stdio, until the client closes it."""
    with _service_extra("mcp"):
        from imgsim.service.mcp import run_stdio
    return run_stdio(args.index_dir)


def _print_json(data: dict) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def cmd_index(args: argparse.Namespace) -> int:
    weights = args.weights
    if weights is None and (args.rebuild or not index_exists(args.index)):  # a rebuild has no index to ask
        weights = os.environ.get("IMGSIM_WEIGHTS") or None
    engine = make_engine(args.engine, address=args.ray_address)  # refuses, or says what to install, before any work
    config = BuildConfig(backbone=args.backbone, weights=weights, pooling=args.pooling, batch_size=args.batch_size,
                         runtime=args.runtime, precision=args.precision, search=args.search, rebuild=args.rebuild,
                         allow_large=args.allow_large, recall_target=args.recall, metadata=args.metadata)
    progress = TqdmProgress(enabled=not args.quiet)
    try:
        report = build_index(args.src_dir, args.index, config, progress=progress, engine=engine)
    finally:
        progress.close()
    _print_report(report)
    if args.verbose:
        print(format_timings(report))
    return 0


def format_timings(r: BuildReport) -> str:
    """Where an indexing run's time went, one step a line, with each step's share of the total."""
    total = sum(r.timings.values()) or 1.0
    lines = [f"  time: {total:.1f} s in all (engine: {r.engine}" + (f", runtime: {r.runtime}" if r.runtime else "")
             + ")"]
    for step, seconds in r.timings.items():
        lines.append(f"    {step:<48} {seconds:7.1f} s  {100 * seconds / total:5.1f} %")
    return "\n".join(lines)


def _print_report(r: BuildReport) -> None:
    lines = [f"Indexed {r.indexed} images from {r.root} into {r.index_dir}"
             + ("" if r.committed else " (nothing changed)")]
    parts = [f"{r.added} added", f"{r.changed} changed", f"{r.removed} removed", f"{r.unchanged} unchanged"]
    if r.resumed:
        parts.append(f"{r.resumed} resumed from an interrupted run")
    lines.append("  " + ", ".join(parts))
    if r.extracted:
        lines.append(f"  extracted {r.extracted} in {r.extract_seconds:.1f} s ({r.images_per_second:.1f} images/s "
                     f"on {r.device}); weights: {r.weights_label}; pooling: {r.pooling}")
        if r.runtime:
            lines.append(f"  forward pass: {r.runtime}" + (f" (engine: {r.engine})" if r.engine != "local" else ""))
    if r.skipped:
        lines.append(f"  skipped {len(r.skipped)} file(s):")
        for s in r.skipped[:20]:
            lines.append(f"    {s.path}: {s.reason.value}" + (f" ({s.detail})" if s.detail else ""))
        if len(r.skipped) > 20:
            lines.append(f"    ... and {len(r.skipped) - 20} more (see `python -m imgsim info {r.index_dir}`)")
    if r.ignored:
        lines.append(f"  ignored {r.ignored} non-image or hidden file(s)")
    lines.extend(_metadata_lines(r))
    print("\n".join(lines))


def _metadata_lines(r: BuildReport) -> list[str]:
    """What an indexing run read as metadata, and what it could not use (never a reason to skip an image)."""
    lines = []
    if r.metadata_read:
        problems = ", ".join(f"{n} {reason}" for reason, n in r.metadata_problems.items())
        lines.append(f"  metadata read from {r.metadata_read} file(s)" + (f"; left none: {problems}" if problems else ""))
    s = r.sidecar
    if s is not None:
        lines.append(f"  {s.source}: {s.matched} row(s) used, column(s) {', '.join(s.columns) or '(none)'}")
        if s.unknown:
            shown = ", ".join(s.unknown[:10]) + (f" and {len(s.unknown) - 10} more" if len(s.unknown) > 10 else "")
            lines.append(f"  {s.source}: {len(s.unknown)} path(s) not in the index, not used: {shown}")
        if s.clashes:
            lines.append(f"  {s.source}: column(s) {', '.join(s.clashes)} named like a built-in field, not used: "
                         "rename them")
        if s.duplicates:
            lines.append(f"  {s.source}: {len(s.duplicates)} path(s) given more than once (the last row wins): "
                         + ", ".join(s.duplicates[:10]))
        if s.no_path:
            lines.append(f"  {s.source}: {s.no_path} row(s) without a path, not used")
    return lines


def cmd_query(args: argparse.Namespace) -> int:
    col = Collection.open(args.index_dir)
    if col.count == 0:
        raise ImgsimError(f"The index at {args.index_dir} holds no images.")
    weights = args.weights or None
    args.filter = parse_where(args.where, args.near)
    passing = col.filter_mask(args.filter)  # a bad field or value is refused before any model is built

    def model():
        return col.extractor(weights)

    if args.text is not None:
        if args.images or args.negatives:
            raise ImgsimError("Give either an IMAGE_PATH or --text, not both.")
        return _text_query(col, args, model)
    if not args.images:
        raise ImgsimError("Give an IMAGE_PATH to search with, or --text \"a description\" (CLIP indexes).")
    if len(args.images) > 1 or args.negatives:
        return _query_examples(col, args, model)
    args.image = args.images[0]
    result = col.query_file(args.image, args.k, extractor=model, where=args.filter).within(args.max_distance)
    if args.json:
        _print_json({**query_json(col, args.image, result), **filter_fields(args.filter, args.max_distance)})
        return 0
    if col.is_random:
        print(RANDOM_NOTE, file=sys.stderr)
    where = "indexed" if result.row is not None else "not indexed: embedded with the model"
    print(f"Query: {args.image} ({where})")
    _print_filters(args.filter, passing, col.count)
    _print_neighbors(result.neighbors)
    return 0


def _print_filters(where: Filter, passing, count: int) -> None:
    """Which filters a query ran under and how many images passed them."""
    if passing is not None:
        shown = [*where.texts, *([f"near {where.near.text} km"] if where.near is not None else [])]
        print(f"Filters: {'; '.join(shown)} ({int(passing.sum())} of {count} images pass)")


def _print_neighbors(neighbors: list[Neighbor]) -> None:
    """The results table of every query: rank, distance, cosine and path, nearest first (and, for a text query
    that used keywords, each result's rank in each ranking)."""
    scored = any(n.scores for n in neighbors)
    print(f"{'rank':>4}  {'distance':>8}  {'cosine':>7}  " + ("from" + " " * 24 if scored else "") + "path")
    for n in neighbors:
        distance = "-" if n.distance is None else f"{n.distance:.4f}"
        cosine = "-" if n.similarity is None else f"{n.similarity:.4f}"
        ranks = ", ".join(f"{name} #{hit.rank}" for name, hit in (n.scores or {}).items())
        print(f"{n.rank:>4}  {distance:>8}  {cosine:>7}  " + (f"{ranks:<28}" if scored else "") + n.path)
    if not neighbors:
        print("(no image passes the filters)")


def _query_examples(col: Collection, args: argparse.Namespace, model) -> int:
    """Several images (and --not images) as one 'more like these' query."""
    positives = [col.embed_file(p, model) for p in args.images]
    negatives = [col.embed_file(p, model) for p in args.negatives]
    result = col.query_examples(positives, negatives, args.k, where=args.filter).within(args.max_distance)
    if args.json:
        _print_json({**examples_json(col, args.images, args.negatives, result),
                     **filter_fields(args.filter, args.max_distance)})
        return 0
    if col.is_random:
        print(RANDOM_NOTE, file=sys.stderr)
    print(f"More like: {', '.join(args.images)}" + (f"; not like: {', '.join(args.negatives)}" if args.negatives else ""))
    _print_filters(args.filter, col.filter_mask(args.filter), col.count)
    _print_neighbors(result.neighbors)
    return 0


def _text_query(col: Collection, args: argparse.Namespace, model) -> int:
    fusion = DEFAULT_WEIGHTS if args.fusion is None else parse_fusion(args.fusion)
    result, embedded = col.query_text(args.text, args.k, model=model, where=args.filter, fusion=fusion)
    if embedded is None and args.max_distance is not None:
        raise ImgsimError(f"--max-distance needs image distances, and a keyword search has none: the "
                          f"{col.backbone.name} index has no text model.")
    result = result.within(args.max_distance)
    if args.json:
        _print_json({**text_json(col, embedded, result, text=args.text, fusion=fusion),
                     **filter_fields(args.filter, args.max_distance)})
        return 0
    if embedded is None:
        print(f"Query: text “{args.text}” (keywords, BM25: the {col.backbone.spec} index has no text model)")
    else:
        if col.is_random:
            print(RANDOM_NOTE, file=sys.stderr)
        if embedded.truncated:
            print(f"note: {embedded.note}", file=sys.stderr)
        fused = " fused with keywords (BM25)" if any(n.scores for n in result.neighbors) else ""
        print(f"Query: text “{embedded.text}” ({col.backbone.spec}, {embedded.tokens} tokens{fused})")
    _print_filters(args.filter, col.filter_mask(args.filter), col.count)
    _print_neighbors(result.neighbors)
    return 0


def cmd_dedup(args: argparse.Namespace) -> int:
    col = Collection.open(args.index_dir)
    groups = col.duplicate_groups(args.threshold)
    if args.json:
        _print_json(dedup_json(col, args.threshold, groups))
        return 0
    distribution = nearest_distribution(col)
    if col.is_random:
        print(RANDOM_NOTE, file=sys.stderr)
    if distribution["percentiles"]:
        pct = ", ".join(f"{p}%: {v:.3f}" for p, v in distribution["percentiles"].items())
        within = ", ".join(f"{n} within {t}" for t, n in distribution["images_within"])
        print(f"Distance from each image to its nearest other image - percentiles {pct}")
        print(f"Images with a neighbour closer than the threshold: {within}")
    print(f"{len(groups)} group(s) of images within distance {args.threshold}:")
    for number, g in enumerate(groups, start=1):
        print(f"group {number} ({len(g.rows)} images)")
        for r, d in zip(g.rows, g.nearest):
            print(f"  {d:8.4f}  {col.paths[r]}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    col = Collection.open(args.index_dir)
    data = {**info_dict(col), "metadata": metadata_info(col)}
    if args.json:
        _print_json(data)
        return 0
    size = sum(p.stat().st_size for p in (col.index.directory / col.index.generation).iterdir())
    print(f"Index {col.index.directory} (format {data['version']}, {col.index.generation}, {size / 2**20:.1f} MiB)")
    print(f"  folder:   {data['root']}")
    print(f"  images:   {data['indexed']} indexed, {len(data['skipped'])} skipped, {data['ignored']} ignored")
    model = data["backbone"] + (f" (preset {data['preset']})" if data.get("preset") else "")
    print(f"  model:    {model}, pooling {data['pooling']} ({data['dims']:,} values per image)")
    print(f"  weights:  {data['weights_label']}")
    print(f"  updated:  {data['updated']} (created {data['created']})")
    print(f"  search:   {col.search_summary(short=True)}")
    fields = data["metadata"]["fields"]
    if fields:
        known = ", ".join(f"{f['name']} {f['count']}" for f in fields if f["count"])
        print(f"  metadata: {len(fields)} fields; images with a value: {known}"
              + ("; keyword search over their text" if data["metadata"]["keywords"] else ""))
    else:
        print("  metadata: none (built before imgsim read metadata; `index` again adds it)")
    for s in data["skipped"]:
        print(f"  skipped {s['path']}: {s['reason']}" + (f" ({s['detail']})" if s["detail"] else ""))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    col = Collection.open(args.index_dir)
    ev = col.evaluate(args.k)
    if args.json:
        _print_json(evaluate_json(col, ev))
        return 0
    if col.is_random:
        print(RANDOM_NOTE)
    print(f"Labels from sub-folders: {ev.queries} labelled images, {len(ev.per_label)} labels, "
          f"{ev.unlabelled} unlabelled")
    print(f"{'label':<20} {'images':>6} {f'P@{ev.k}':>7} {'1-NN':>7} {'random':>7}")
    for s in ev.per_label:
        print(f"{s.label:<20} {s.images:>6} {s.precision_at_k:7.3f} {s.nn_accuracy:7.3f} {s.baseline:7.3f}")
    print(f"{'all':<20} {ev.queries:>6} {ev.precision_at_k:7.3f} {ev.nn_accuracy:7.3f} {ev.baseline_precision_at_k:7.3f}")
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    col = Collection.open(args.index_dir)
    image, shown = col.grid_image(args.cell, args.max_images)
    try:
        image.save(args.out)
    except ValueError as exc:  # Pillow: no format for that file name
        raise ImgsimError(f"Cannot write {args.out}: {exc}. Name the output file .png (or .jpg).") from None
    side = image.size[0] // args.cell
    print(f"Wrote {args.out}: {shown} images on a {side}x{side} grid")
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    col = Collection.open(args.index_dir)
    if args.mode and not args.out:
        raise ImgsimError("--link and --copy need --out DIR (the folder to organise into).")
    if args.out:  # checked before any work, so an unsafe target costs nothing
        check_output(args.out, col.index.root)
    suggested = col.suggest_k() if args.k is None else None
    model = col.clusters(args.k if args.k is not None else suggested.k)
    report = organise(col.paths, model.labels_, model.k_, col.index.root, args.out, args.mode or "link") \
        if args.out else None
    if args.json:
        data = clusters_json(col, model, args.k, args.central, suggested)
        if report is not None:
            data["out"] = {"dir": str(report.out), "mode": report.mode, "folders": report.folders, "files": report.files}
        _print_json(data)
        return 0
    if col.is_random:
        print(RANDOM_NOTE, file=sys.stderr)
    if suggested is not None:
        print(f"Suggested k = {suggested.k} (best silhouette score on {suggested.sample_size} images)")
    print(f"{model.k_} clusters of {col.count} images" + (f" (k clamped from {args.k})" if args.k and args.k != model.k_ else ""))
    for c in cluster_dict(col, model, args.central):
        print(f"cluster {c['id'] + 1} ({c['size']} images): " + ", ".join(c["central"]))
    if report is not None:
        verb = "linked" if report.mode == "link" else "copied"
        print(f"{report.files} images {verb} into {len(report.folders)} folders under {report.out}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    col = Collection.open(args.index_dir)

    def model():
        return col.extractor(args.weights or None)

    def side(path: str) -> int | bytes:
        found = col.read_file(path)
        if found is None:
            raise ImgsimError(f"Image not found: {path}")
        row, data = found
        return row if row is not None else data

    if col.index.pooling == "avg" and not args.json:
        print("This index stores pooled (avg) vectors: loading the model to compute both 7x7 feature maps...",
              file=sys.stderr)
    explanation = col.explain(side(args.image_a), side(args.image_b), extractor=model)
    if args.json:
        _print_json(explain_json(col, args.image_a, args.image_b, explanation))
        return 0
    if col.is_random:
        print(RANDOM_NOTE, file=sys.stderr)
    print(f"{args.image_a} vs {args.image_b}: cosine {explanation.cosine:.4f}")
    print(explanation.describe())
    header = "per-cell dot products (sum = cosine)" if explanation.mode == "flatten" else \
        "best-match cosine of each cell of the first image"
    print(header + ", 7x7 grid, top row first:")
    for line in explanation.cells:
        print("  " + " ".join(f"{v:7.4f}" for v in line))
    return 0


def cmd_outliers(args: argparse.Namespace) -> int:
    col = Collection.open(args.index_dir)
    found = col.outliers(args.n)
    # The score averages up to 5 neighbours, fewer where the stored graph is shallower (tiny collections).
    k = max(1, min(5, int(col.index.array("nn_distances").shape[1])))
    if args.json:
        _print_json(outliers_json(col, found, k))
        return 0
    if col.is_random:
        print(RANDOM_NOTE, file=sys.stderr)
    print(f"The images farthest from their {k} nearest neighbours:")
    print(f"{'rank':>4}  {'mean d' + str(k):>8}  {'nearest':>8}  path")
    for o in found:
        print(f"{o.rank:>4}  {o.score:8.4f}  {o.nearest:8.4f}  {col.paths[o.row]}")
    return 0


COMMANDS = {"index": cmd_index, "query": cmd_query, "dedup": cmd_dedup, "info": cmd_info,
            "evaluate": cmd_evaluate, "grid": cmd_grid, "cluster": cmd_cluster, "explain": cmd_explain,
            "outliers": cmd_outliers, "serve": cmd_serve, "mcp": cmd_mcp}


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ImgsimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the last complete index is intact; run the same command again to resume.",
              file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # a folder that cannot be read or written: a message, not a traceback
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
