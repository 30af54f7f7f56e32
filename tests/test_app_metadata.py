"""The dashboard with metadata, driven headlessly with AppTest: the filter bar filters before similarity (results
are the library's filtered answer), lives in ``?where=`` (untrusted there), dims the map, and reaches the cards,
the Places view, duplicates and clusters; an index without metadata shows none of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags
from streamlit.testing.v1 import AppTest

from imgsim.build import build_index
from imgsim.collection import Collection
from imgsim.metadata.filters import parse_where

from .conftest import serve
from .test_app import results, texts
from .test_filters_search import CITIES, StandIn, gps_exif, write_photo

APP = str(Path(__file__).resolve().parents[1] / "app.py")
CAMERAS = ("Canon EOS 5D", "NIKON D850")
CAPTIONS = {"g0/p000.jpg": "A heron standing in the reeds", "g1/p001.jpg": "Two otters on a riverbank",
            "g2/p002.jpg": "A red tram in the rain", "g0/p003.jpg": "A heron in flight"}


def metadata_folder(root: Path, count: int = 36) -> Path:
    """``count`` photos in three folders; three in four have a date, a camera and a GPS position near one of
    :data:`CITIES`; a sidecar gives four of them a caption."""
    names = list(CITIES)
    for i in range(count):
        exif = None
        if i % 4:
            lat, lon = CITIES[names[i % len(names)]]
            exif = gps_exif(lat + 0.001 * (i % 7), lon - 0.001 * (i % 5), f"{2020 + i % 4}:0{1 + i % 9}:15 12:00:00")
            exif[ExifTags.Base.Make], exif[ExifTags.Base.Model] = ("", CAMERAS[i % 2])
        write_photo(root / f"g{i % 3}" / f"p{i:03d}.jpg", seed=700 + i, size=(40 + i % 60, 40), exif=exif)
    lines = ["path,caption"] + [f"{p},{c}" for p, c in CAPTIONS.items()]
    (root.parent / "captions.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
