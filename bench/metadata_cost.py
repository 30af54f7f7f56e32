"""Metadata cost per 1,000 demo photos, next to decoding and feature extraction, in one run.

1. ``read_file_metadata`` from bytes already read (what indexing pays: it reads every file once anyway),
   from the path (file read included), and with a camera's EXIF (date, lens, GPS) and an XMP packet added to
   each file's header (the demo photos carry none);
2. decoding to the model's input (``decode.model_input``) and the forward pass of ResNet50 (seeded random
   weights: same shapes and cost as ImageNet) and EfficientNet-Lite0 (ImageNet), batches of 16, the default
   runtime; each per image, steady state (model build and runtime setup are reported apart);
3. the table: building it, writing and reading Parquet, a three-clause filter; BM25 fit and query over the
   demo's text (file and folder names plus data/demo/captions.csv);
4. BM25 over N synthetic captions (``--captions``): fit time and query p50.

    python bench/metadata_cost.py [--rounds 3] [--models resnet50,efficientnet-lite0] [--captions 100000]
"""

from __future__ import annotations

import argparse
import statistics
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

from common import DEMO, machine, table

from imgsim import decode
from imgsim.metadata.filters import parse_where
from imgsim.metadata.keywords import KeywordIndex
from imgsim.metadata.read import count_problems, read_file_metadata
from imgsim.metadata.sidecar import read_sidecar
from imgsim.metadata.table import MetadataTable

XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag><rdf:li>harbour</rdf:li>'
       b'<rdf:li>boats</rdf:li></rdf:Bag></dc:subject><dc:description><rdf:Alt><rdf:li xml:lang="x-default">Boats '
       b'at dusk</rdf:li></rdf:Alt></dc:description></rdf:Description></rdf:RDF></x:xmpmeta>')
WORDS = ("red blue green boat harbour heron crow beach sunset mountain river city street night morning dog cat "
         "bird tree flower coin rocket car bridge market snow rain forest lake child old new small large").split()


def _resnet50():
    from imgsim.models.resnet50 import FeatureExtractor

    return FeatureExtractor("random", "flatten", 16)


def _efficientnet_lite0():
    from imgsim.models.efficientnet_lite0 import EfficientNetLite0Backbone

    return EfficientNetLite0Backbone("imagenet", "avg", 16)


MODELS = {"resnet50": ("ResNet50 (random weights, flatten)", _resnet50),
          "efficientnet-lite0": ("EfficientNet-Lite0 (ImageNet, avg)", _efficientnet_lite0)}


def camera_blocks() -> bytes:
    """APP1 segments as a camera and a photo manager write them: EXIF (date, camera, lens, GPS) and XMP."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make], exif[ExifTags.Base.Model] = "Canon", "Canon EOS 5D Mark IV"
    exif[ExifTags.Base.Orientation] = 1
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    sub[ExifTags.Base.DateTimeOriginal] = "2023:07:14 10:22:01"
    sub[ExifTags.Base.LensModel] = "EF24-105mm f/4L IS USM"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef], gps[ExifTags.GPS.GPSLatitude] = "N", (48.0, 51.0, 30.24)
    gps[ExifTags.GPS.GPSLongitudeRef], gps[ExifTags.GPS.GPSLongitude] = "E", (2.0, 17.0, 40.2)
    segments = [exif.tobytes(), b"http://ns.adobe.com/xap/1.0/\x00" + XMP]
    return b"".join(b"\xff\xe1" + struct.pack(">H", len(s) + 2) + s for s in segments)


def best_of(rounds: int, fn) -> float:
    """The fastest of ``rounds`` runs of ``fn()``, in seconds (the least disturbed by other processes)."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def forward_cost(model, images: np.ndarray, rounds: int) -> float:
    """Seconds per image of ``model.embed`` over ``images``, after one warm-up batch."""
    model.embed(images[:16])
    return best_of(rounds, lambda: model.embed(images)) / len(images)


def synthetic_bm25(n: int, seed: int = 0) -> list[list[object]]:
    """Fit time and query p50 of BM25 over ``n`` random 8-word captions."""
    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    texts = [" ".join(row) for row in words[rng.integers(0, len(words), (n, 8))]]
    started = time.perf_counter()
    index = KeywordIndex().fit(texts)
    fit = time.perf_counter() - started
    queries = [" ".join(words[rng.integers(0, len(words), 2)]) for _ in range(50)]
    lat = []
    for q in queries:
        started = time.perf_counter()
        index.search(q, k=10)
        lat.append(time.perf_counter() - started)
    return [[f"BM25 fit, {n:,} synthetic captions", f"{fit:.1f} s", ""],
            [f"BM25 query p50 (k=10), {n:,} captions", f"{statistics.median(lat) * 1e3:.1f} ms",
             f"p99 {np.percentile(lat, 99) * 1e3:.1f} ms"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated, of: " + ", ".join(MODELS) + " ('' for none)")
    ap.add_argument("--captions", type=int, default=100_000, help="synthetic captions for the BM25 figure (0: skip)")
    args = ap.parse_args()
    paths = sorted(DEMO.glob("*/*.jpg"))
    rels = [p.relative_to(DEMO).as_posix() for p in paths]
    blobs = [p.read_bytes() for p in paths]
    n = len(paths)
    per_k = 1000 / n
    rows: list[list[object]] = []

    from_bytes = best_of(args.rounds, lambda: [read_file_metadata(p, b, r) for p, b, r in zip(paths, blobs, rels)])
    from_path = best_of(args.rounds, lambda: [read_file_metadata(p, rel=r) for p, r in zip(paths, rels)])
    metas = [read_file_metadata(p, b, r) for p, b, r in zip(paths, blobs, rels)]
    blocks = camera_blocks()
    tagged = [b[:2] + blocks + b[2:] for b in blobs]
    assert read_file_metadata(paths[0], tagged[0], rels[0]).values["lat"] is not None
    with_tags = best_of(args.rounds, lambda: [read_file_metadata(p, b, r) for p, b, r in zip(paths, tagged, rels)])
    rows.append(["metadata, bytes already read", f"{from_bytes * per_k:.2f} s", f"{from_bytes / n * 1e3:.3f} ms"])
    rows.append(["metadata, from the path", f"{from_path * per_k:.2f} s", f"{from_path / n * 1e3:.3f} ms"])
    rows.append([f"metadata, camera EXIF + GPS + XMP added ({len(blocks):,} B)", f"{with_tags * per_k:.2f} s",
                 f"{with_tags / n * 1e3:.3f} ms"])
    decoded = []
    decoding = best_of(args.rounds, lambda: decoded.__setitem__(slice(None), [decode.model_input(b) for b in blobs]))
    rows.append(["decode to 224x224 (model input)", f"{decoding * per_k:.2f} s", f"{decoding / n * 1e3:.2f} ms"])
    images = np.stack(decoded)

    for name in filter(None, args.models.split(",")):
        label, build = MODELS[name]
        started = time.perf_counter()
        model = build()
        setup = time.perf_counter() - started
        cost = forward_cost(model, images, args.rounds)
        rows.append([f"{label} forward, {model.runtime}", f"{cost * 1000:.1f} s", f"{cost * 1e3:.1f} ms (setup {setup:.1f} s)"])

    built = best_of(args.rounds, lambda: MetadataTable.from_rows([m.values for m in metas]))
    demo_table, _ = MetadataTable.from_rows([m.values for m in metas]).with_sidecar(read_sidecar(DEMO / "captions.csv"), rels)
    with tempfile.TemporaryDirectory() as tmp:
        written = best_of(args.rounds, lambda: demo_table.save(tmp))
        size = (Path(tmp) / "metadata.parquet").stat().st_size
        loaded = best_of(args.rounds, lambda: MetadataTable.load(tmp, count=n))
    flt = parse_where(["folder in [birds, fish, mammals]", "width >= 200", "caption ~ a"])
    masked = best_of(args.rounds, lambda: flt.mask(demo_table))
    fitted = best_of(args.rounds, lambda: KeywordIndex.from_table(demo_table))
    index = KeywordIndex.from_table(demo_table)
    queried = best_of(args.rounds, lambda: index.search("heron", k=10))
    rows += [
        ["table from rows", f"{built * per_k * 1e3:.1f} ms", f"{n} rows: {built * 1e3:.1f} ms"],
        ["Parquet write", f"{written * per_k * 1e3:.1f} ms", f"{n} rows: {written * 1e3:.1f} ms, {size / n:.0f} B/image"],
        ["Parquet read", f"{loaded * per_k * 1e3:.1f} ms", f"{n} rows: {loaded * 1e3:.1f} ms"],
        ["filter, 3 clauses", f"{masked * per_k * 1e3:.2f} ms", f"{n} rows: {masked * 1e3:.2f} ms"],
        ["BM25 fit (demo text)", f"{fitted * per_k * 1e3:.1f} ms", f"{n} rows: {fitted * 1e3:.1f} ms"],
        ["BM25 query (demo)", "", f"{queried * 1e3:.2f} ms"],
    ]
    if args.captions:
        rows += synthetic_bm25(args.captions)
    print(f"Machine: {machine()}")
    print(f"{n} demo photos (JPEG, longest side <= 320 px), best of {args.rounds}; problems: {count_problems(metas) or 'none'}\n")
    print(table(["step", "per 1,000 photos", "detail"], rows))


if __name__ == "__main__":
    main()
