"""Every ``st.cache_*`` wrapper of the dashboard: heavy things load once per process, answers once per input.

Arguments are what makes an answer different (index folder, generation, parameters), so a re-index (a new
generation) loads the new data while sessions still drawing the old one keep theirs.
"""

from __future__ import annotations

import atexit
import gc
import hashlib
import html
import io
import shutil
from pathlib import Path

import plotly
import streamlit as st

from dashboard.messages import LOG
from dashboard.paths import PREVIEW_CACHE, PREVIEW_URL, STATIC_DIR, static_text
from imgsim import decode
from imgsim.analysis.clusters import ClusterModel, SuggestedK
from imgsim.analysis.explain import Explanation
from imgsim.collection import Collection, check_compatible
from imgsim.models import base
from imgsim.models.base import Backbone, BackboneSpec, TextEmbedding
from imgsim.models.weights import weights_spec
from imgsim.serving import charts, jobs, mapview
from imgsim.store.generations import CURRENT, index_exists

# --- the collection ---------------------------------------------------------------------------------------------

@st.cache_resource(show_spinner=False)
def open_collection(index_dir: str, generation: str) -> Collection:
    """The index and its search structures; ``generation`` makes a re-index load the new one."""
    return Collection.open(index_dir)


def generation_of(index_dir: Path) -> str:
    """The index's current generation (its CURRENT file)."""
    return (index_dir / CURRENT).read_text(encoding="utf-8").strip()


def current_collection(index_dir: Path) -> Collection:
    """The served collection, checked cheaply (stat) against its files before this rerun touches them.

    A memory-mapped file changed under the server would kill it (SIGBUS) on the next read: instead the
    cached collection is dropped and the current generation is loaded again, which either works (a new
    index) or raises the same clear message a fresh start gives.
    """
    col = open_collection(str(index_dir), generation_of(index_dir))
    changed = col.index.changed_on_disk()
    if changed:
        LOG.warning("index files changed under the server (%s): reloading %s", ", ".join(changed), index_dir)
        open_collection.clear()
        st.cache_data.clear()
        col = open_collection(str(index_dir), generation_of(index_dir))
    return col


def live_collection(index_dir: Path, generation: str) -> Collection:
    """The collection a fragment draws, checked as a page run checks it; when the index has moved to another
    generation since the page was drawn (rows renumbered), the whole page reruns instead."""
    if index_exists(index_dir):
        col = current_collection(index_dir)
        if col.index.generation == generation:
            return col
    st.rerun(scope="app")


# --- the model: one loader, built only when indexing, an upload, a description or Why? needs it ---------------

@st.cache_resource(show_spinner="Loading the model…")
def load_model(backbone: str, weights: str, pooling: str, precision: str = "float32") -> Backbone:
    """The model of a backbone spec with these weights, pooling and precision, built once per process."""
    # An update of an index must compute in its precision (backbones without a choice ignore it).
    model = base.make_backbone(BackboneSpec.parse(backbone), weights, pooling, precision=precision)
    # After every script and fragment run Streamlit collects all garbage twice (runner.postScriptGC, and
    # Keras' clear_session once keras is imported): with TensorFlow and a model loaded, ~0.5 s of CPU holding
    # the GIL, every second while the progress fragment polls (issue 20: the app's first run 1.5x the CLI,
    # 4x its CPU). The model and the modules it imported live as long as the process (this cache never
    # evicts), so they are moved out of the collector's sight; later objects are collected as before.
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


@st.cache_data(show_spinner="Rendering the image grid…")
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


@st.cache_data(show_spinner=False)
def _sprite(index_dir: str, generation: str, folder: str) -> dict | None:
    prefix = hashlib.sha1(index_dir.encode()).hexdigest()[:12]
    return mapview.publish_previews(open_collection(index_dir, generation), Path(folder),
                                    f"{PREVIEW_URL}{Path(folder).name}/", prefix, generation, log=LOG)


@st.cache_data(show_spinner=False)
def map_base_json(index_dir: str, generation: str, height: int) -> str:
    """The collection's scatter as Plotly JSON, built once per index generation (queries only add overlays)."""
    col = open_collection(index_dir, generation)
    rows = mapview.drawn_rows(col.count)
    density = mapview.density(col.map_xy()) if len(rows) < col.count else None
    # Legend names in Plotly's HTML subset, for the drawn rows only (every label of a million rows is 0.2 s).
    labels = {int(r): html.escape(col.label_of(r), quote=False) for r in rows}
    return charts.map_base(col.map_xy(), labels, col.paths, height=height, native_hover=False, rows=rows,
                           density=density).to_json()


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

@st.cache_data(show_spinner="Checking neighbours against folder labels…")
def evaluation(index_dir: str, generation: str, k: int):
    """precision@k and 1-NN accuracy against the sub-folders."""
    return open_collection(index_dir, generation).evaluate(k)


@st.cache_data(show_spinner="Finding duplicate groups…")
def duplicate_groups(index_dir: str, generation: str, threshold: float):
    """Groups of images linked by distances under ``threshold``."""
    return open_collection(index_dir, generation).duplicate_groups(threshold)


@st.cache_data(show_spinner="Choosing a k: silhouette scores on a sample…")
def suggested_k(index_dir: str, generation: str) -> SuggestedK:
    """The number of clusters with the best silhouette score on a sample."""
    return open_collection(index_dir, generation).suggest_k()


@st.cache_resource(show_spinner="Clustering…", max_entries=16)
def cluster_model(index_dir: str, generation: str, k: int) -> ClusterModel:
    """k-means with ``k`` clusters."""
    return open_collection(index_dir, generation).clusters(k)


@st.cache_data(show_spinner=False)
def cluster_map_json(index_dir: str, generation: str, k: int, height: int) -> str:
    """The map coloured by cluster, as Plotly JSON."""
    col = open_collection(index_dir, generation)
    clusters = cluster_model(index_dir, generation, k)
    width = len(str(clusters.k_))
    names = [f"cluster {int(c) + 1:0{width}d}" for c in clusters.labels_]
    paths = [html.escape(p, quote=False) for p in col.paths]  # Plotly's hover reads its HTML subset
    return charts.map_base(col.map_xy(), names, paths, height=height).to_json()
