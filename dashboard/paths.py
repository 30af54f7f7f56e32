"""Where the dashboard's files are: the app folder, the browser files Streamlit serves, the demo collection."""

from __future__ import annotations

import functools
from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[1]
#: Served by Streamlit as app/static/... (.streamlit/config.toml: enableStaticServing).
STATIC_DIR = APP_DIR / "static"
#: The maps' hover previews: one folder per running server process (see cached.preview_folder).
PREVIEW_CACHE = STATIC_DIR / "cache"
PREVIEW_URL = "app/static/cache/"
DEMO_DIR = APP_DIR / "data" / "demo"
DEMO_EXAMPLE = "mammals/tiger.jpg"  # the demo's first view: a photo with clear neighbours


@functools.cache
def static_text(name: str) -> str:
    """One of the dashboard's browser files (HTML, CSS, JS under static/), read once per process."""
    return (STATIC_DIR / name).read_text(encoding="utf-8")
