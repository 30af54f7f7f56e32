"""Every ``st.cache_*`` wrapper of the dashboard: heavy things load once per process, answers once per input.

Arguments are what makes an answer different (index folder, generation, parameters), so a re-index (a new
generation) loads the new data while sessions still drawing the old one keep theirs. Every wrapper with arguments
is bounded (``max_entries``): the arguments come from visitors (folders, link values), and an old generation's
entries age out instead of piling up.
"""

from __future__ import annotations

import atexit
import gc
import hashlib
import html
import io
import shutil
import threading
from pathlib import Path

import numpy as np
import plotly
import streamlit as st

from dashboard.messages import LOG
from dashboard.paths import PREVIEW_CACHE, PREVIEW_URL, STATIC_DIR, static_text
from imgsim import decode
from imgsim.analysis.clusters import ClusterModel, SuggestedK
from imgsim.analysis import duplicates
from imgsim.analysis.duplicates import DuplicateScan
from imgsim.analysis.explain import Explanation
from imgsim.collection import Collection, check_compatible
from imgsim.metadata.filters import Filter
from imgsim.models import base
from imgsim.models.base import Backbone, BackboneSpec, TextEmbedding
from imgsim.models.weights import weights_spec
from imgsim.serving import charts, jobs, mapview
from imgsim.store.generations import CURRENT, index_exists

# --- the collection ---------------------------------------------------------------------------------------------

@st.cache_resource(show_spinner=False, max_entries=8)  # a few indexes served at once, each a set of mmaps
def open_collection(index_dir: str, generation: str) -> Collection:
    """The index and its search structures; ``generation`` (see generation_of) makes a re-index load the new one."""
    return Collection.open(index_dir)


@st.cache_resource(show_spinner=False)
def _reloads() -> tuple[dict[str, int], threading.Lock]:
    """Per index folder, how often its files changed under this server process (a part of its cache key)."""
    return {}, threading.Lock()


def generation_of(index_dir: Path) -> str:
    """The cache key of the index's current generation: its CURRENT file, and how often that generation's files
    changed under this server (so that a reload misses that index's cached answers only)."""
    current = (index_dir / CURRENT).read_text(encoding="utf-8").strip()
    reloads = _reloads()[0].get(str(index_dir), 0)
    return f"{current}~{reloads}" if reloads else current


def current_collection(index_dir: Path) -> Collection:
    """The served collection, checked cheaply (stat) against its files before this rerun touches them.

    A memory-mapped file changed under the server would kill it (SIGBUS) on the next read: instead the
    cached collection is dropped and the current generation is loaded again under a new key, which either
    works (a new index) or raises the same clear message a fresh start gives. Only this index's entries are
    left behind (they age out); other indexes' sessions keep theirs.
    """
    key = generation_of(index_dir)
    col = open_collection(str(index_dir), key)
    changed = col.index.changed_on_disk()
    if changed:
        LOG.warning("index files changed under the server (%s): reloading %s", ", ".join(changed), index_dir)
        reloads, lock = _reloads()
        with lock:  # several sessions see the change: one new key
            if generation_of(index_dir) == key:
                reloads[str(index_dir)] = reloads.get(str(index_dir), 0) + 1
        open_collection.clear(str(index_dir), key)
        col = open_collection(str(index_dir), generation_of(index_dir))
    return col


def live_collection(index_dir: Path, generation: str) -> Collection:
    """The collection a fragment draws, checked as a page run checks it; when the index has moved to another
    generation (rows renumbered) or was reloaded since the page was drawn, the whole page reruns instead."""
    if index_exists(index_dir):
        col = current_collection(index_dir)
        if generation_of(index_dir) == generation:
            return col
    st.rerun(scope="app")


# --- the model: one loader, built only when indexing, an upload, a description or Why? needs it ---------------

@st.cache_resource(show_spinner="Loading the model…", max_entries=4)  # hundreds of MB each
def load_model(backbone: str, weights: str, pooling: str, precision: str = "float32") -> Backbone:
    """The model of a backbone spec with these weights, pooling and precision, built once per process."""
    # An update of an index must compute in its precision (backbones without a choice ignore it).
    model = base.make_backbone(BackboneSpec.parse(backbone), weights, pooling, precision=precision)
    # After every script and fragment run Streamlit collects all garbage twice (runner.postScriptGC, and
    # Keras' clear_session once keras is imported): with TensorFlow and a model loaded, ~0.5 s of CPU holding
    # the GIL, every second while the progress fragment polls (issue 20: the app's first run 1.5x the CLI,
    # 4x its CPU). The models and the modules they imported are moved out of the collector's sight; later
    # objects are collected as before. A model this cache evicted (a fifth spec) is frozen too and full of
    # reference cycles: unfreezing first lets this collection free it, so at most one waits for the next load.
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return model


def index_model(col: Collection) -> Backbone:
    """The cached model with this index's backbone, weights, pooling and precision (refused if its weights differ)."""
    # The index's own precision: an update must never add vectors computed in another one.
    built = load_model(col.backbone.spec, weights_spec(col.index.weights), col.index.pooling,
                  col.index.meta.get("precision") or "float32")
    check_compatible(col, built)
    return built


@st.cache_resource(show_spinner=False)
def job_registry() -> jobs.JobRegistry:
    """Indexing jobs of this server process, shared by every session."""
    return jobs.JobRegistry()


# --- images -------------------------------------------------------------------------------------------------------

def _jpeg(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


@st.cache_data(show_spinner=False, max_entries=20000)
def thumb_bytes(path: str, mtime_ns: int, px: int, square: str | None = None) -> bytes | None:
    """A JPEG thumbnail of a collection image (None if the file is gone or unreadable)."""
    try:
        return _jpeg(decode.thumbnail(decode.read_bytes(path), px, square=square))
    except decode.DecodeError:
        return None


@st.cache_data(show_spinner=False)
def placeholder() -> bytes:
    """What stands in for an image file that is gone."""
    from PIL import Image

    return _jpeg(Image.new("RGB", (160, 120), (235, 238, 242)))


@st.cache_data(show_spinner=False, max_entries=32)
def upload_thumb(data: bytes) -> bytes:
    """The upload's thumbnail, decoded with the bounded-memory upload decoder."""
    return _jpeg(decode.upload_thumbnail(data, 256))


@st.cache_data(show_spinner="Rendering the image grid…", max_entries=8)
def grid_png(index_dir: str, generation: str, cell: int) -> bytes:
    """The t-SNE map snapped to a grid of thumbnails, as PNG."""
    image, _ = open_collection(index_dir, generation).grid_image(cell, max_items=900)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# --- the map ------------------------------------------------------------------------------------------------------

@st.cache_resource(show_spinner=False)
def preview_folder() -> Path | None:
    """This process's folder of hover previews under static/cache/ (a secret name), removed when it exits; the
    first call also removes the folders of servers that have ended (never another running server's). None when
    static/cache/ cannot be written: hovering then shows names only."""
    try:
        folder = mapview.own_previews(PREVIEW_CACHE)
    except OSError:
        return None
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def hover_sprite(index_dir: str, generation: str) -> dict | None:
    """The drawn points' previews as sprite-sheet tiles in this process's folder (see mapview.publish_previews)."""
    folder = preview_folder()
    return None if folder is None else _sprite(index_dir, generation, str(folder))


@st.cache_data(show_spinner=False, max_entries=16)
def _sprite(index_dir: str, generation: str, folder: str) -> dict | None:
    prefix = hashlib.sha1(index_dir.encode()).hexdigest()[:12]
    return mapview.publish_previews(open_collection(index_dir, generation), Path(folder),
                                    f"{PREVIEW_URL}{Path(folder).name}/", prefix, generation, log=LOG)


@st.cache_data(show_spinner=False, max_entries=16)
def map_base_json(index_dir: str, generation: str, height: int) -> str:
    """The collection's scatter as Plotly JSON, built once per index generation (queries only add overlays)."""
    col = open_collection(index_dir, generation)
    rows = mapview.drawn_rows(col.count)
    density = mapview.density(col.map_xy()) if len(rows) < col.count else None
    # Legend names in Plotly's HTML subset, for the drawn rows only (every label of a million rows is 0.2 s).
    labels = {int(r): html.escape(col.label_of(r), quote=False) for r in rows}
    return charts.map_base(col.map_xy(), labels, col.paths, height=height, native_hover=False, rows=rows,
                           density=density).to_json()


@st.cache_data(show_spinner=False, max_entries=16)
def places_json(index_dir: str, generation: str, height: int) -> tuple[str, list[int]]:
    """The photos with a GPS position as a longitude/latitude scatter (Plotly JSON, no map tiles: nothing is
    fetched from outside), and the rows it draws."""
    col = open_collection(index_dir, generation)
    rows, lat, lon = col.places()
    if len(rows) > mapview.MAP_POINTS:  # the t-SNE map's bound on points drawn one by one
        keep = mapview.drawn_rows(len(rows))
        rows, lat, lon = rows[keep], lat[keep], lon[keep]
    xy = np.zeros((col.count, 2))
    xy[rows, 0], xy[rows, 1] = lon, lat
    labels = {int(r): html.escape(col.label_of(r), quote=False) for r in rows}
    fig = charts.map_base(xy, labels, col.paths, height=height, native_hover=False, rows=rows)
    fig.update_layout(dragmode="select", xaxis={"visible": True, "title": "longitude", "zeroline": False},
                      # A degree of longitude is cos(latitude) of a degree of latitude: drawn so, near the photos.
                      yaxis={"visible": True, "title": "latitude", "zeroline": False, "scaleanchor": "x",
                             "scaleratio": 1 / max(0.2, float(np.cos(np.radians(np.median(lat))))) if len(lat) else 1},
                      margin={"l": 50, "r": 10, "t": 10, "b": 40})
    return fig.to_json(), [int(r) for r in rows]


@st.cache_resource(show_spinner=False)
def map_component():
    """The map as a custom component (static/imgsim_map.*): Plotly WebGL, hover previews, click and lasso events."""
    bundled = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not (STATIC_DIR / "plotly.min.js").exists() and bundled.exists():
        shutil.copyfile(bundled, STATIC_DIR / "plotly.min.js")
    return st.components.v2.component("imgsim_map", html=static_text("imgsim_map.html"),
                                      js=static_text("imgsim_map.js"), isolate_styles=False)


# --- queries --------------------------------------------------------------------------------------------------------

@st.cache_data(show_spinner="Embedding the description…", max_entries=64)
def embed_text(index_dir: str, generation: str, text: str) -> TextEmbedding:
    """A description's vector from the index's own CLIP model, computed once per text."""
    col = open_collection(index_dir, generation)
    return col.embed_text(text, model=lambda: index_model(col))


@st.cache_data(show_spinner="Embedding the upload…", max_entries=32)
def embed_upload(index_dir: str, generation: str, data: bytes):
    """An upload's vector (or its row, when it is an indexed file), computed once, not on every rerun."""
    col = open_collection(index_dir, generation)
    return col.embed_bytes(data, extractor=lambda: index_model(col), decoder=decode.upload_model_input)


@st.cache_data(show_spinner=False, max_entries=64)
def explanation(index_dir: str, generation: str, a: int | bytes, b: int) -> Explanation:
    """The per-cell explanation of a query (row or upload bytes) and a result row."""
    col = open_collection(index_dir, generation)
    return col.explain(a, b, extractor=lambda: index_model(col), decoder=decode.upload_model_input)


@st.cache_data(show_spinner=False, max_entries=16)
def model_view(index_dir: str, generation: str, source: int | bytes):
    """The image as the model sees it (squashed to 224x224), for drawing the 7x7 grid on: decoded once, an
    upload with the bounded-memory decoder every upload goes through."""
    from PIL import Image

    col = open_collection(index_dir, generation)
    if isinstance(source, bytes):
        return Image.fromarray(decode.upload_model_input(source, resample=col.resample))
    return Image.fromarray(decode.model_input(decode.read_bytes(col.image_path(int(source))), resample=col.resample))


# --- the collection's structure -------------------------------------------------------------------------------------

@st.cache_data(show_spinner="Checking neighbours against folder labels…", max_entries=32)
def evaluation(index_dir: str, generation: str, k: int):
    """precision@k and 1-NN accuracy against the sub-folders."""
    return open_collection(index_dir, generation).evaluate(k)


#: The Duplicates slider's step: a threshold is computed at this precision, so a link's ?t= cannot make every
#: rerun compute anew (0.4, 0.40001, 0.40002, … are one answer, cached).
THRESHOLD_STEP = 0.01


def duplicate_scan(index_dir: str, generation: str, threshold: float, where: Filter | None = None) -> DuplicateScan:
    """Groups of images linked by distances under ``threshold`` (snapped to the slider's step), among those
    that pass ``where``; the scan stops after ``MAX_PAIRS`` linked pairs (a threshold near 1 links nearly all)."""
    return _duplicate_scan(index_dir, generation, round(round(float(threshold) / THRESHOLD_STEP) * THRESHOLD_STEP, 6),
                             where)


@st.cache_data(show_spinner="Finding duplicate groups…", max_entries=128)  # each of the slider's 101 steps
def _duplicate_scan(index_dir: str, generation: str, threshold: float, where: Filter | None = None) -> DuplicateScan:
    return open_collection(index_dir, generation).duplicate_scan(threshold, where, duplicates.MAX_PAIRS)


@st.cache_data(show_spinner="Choosing a k: silhouette scores on a sample…", max_entries=16)
def suggested_k(index_dir: str, generation: str) -> SuggestedK:
    """The number of clusters with the best silhouette score on a sample."""
    return open_collection(index_dir, generation).suggest_k()


@st.cache_resource(show_spinner="Clustering…", max_entries=16)
def cluster_model(index_dir: str, generation: str, k: int) -> ClusterModel:
    """k-means with ``k`` clusters."""
    return open_collection(index_dir, generation).clusters(k)


@st.cache_data(show_spinner=False, max_entries=32)
def cluster_map_json(index_dir: str, generation: str, k: int, height: int) -> str:
    """The map coloured by cluster, as Plotly JSON."""
    col = open_collection(index_dir, generation)
    clusters = cluster_model(index_dir, generation, k)
    width = len(str(clusters.k_))
    names = [f"cluster {int(c) + 1:0{width}d}" for c in clusters.labels_]
    paths = [html.escape(p, quote=False) for p in col.paths]  # Plotly's hover reads its HTML subset
    return charts.map_base(col.map_xy(), names, paths, height=height).to_json()
