"""imgsim dashboard: pick or upload an image, see what looks like it, explore the collection's map.

Layout, widgets and cache wrappers only; every behaviour lives in the ``imgsim`` package.
Run with ``streamlit run app.py``. Settings: IMGSIM_IMAGES, IMGSIM_INDEX, IMGSIM_WEIGHTS, and for a shared
server IMGSIM_ROOTS and IMGSIM_ALLOW_INDEXING (see README, "Running it for other people").
"""

from __future__ import annotations

import hashlib
import html
import io
import logging
import os
import secrets
import shutil
import time
from pathlib import Path

import plotly
import plotly.graph_objects as go
import plotly.io as pio
import streamlit as st

from imgsim import decode
from imgsim.serving import charts
from imgsim.serving import export
from imgsim.serving import jobs
from imgsim.serving import mapview
from imgsim.serving import policy as serving
from imgsim.models.base import BackboneSpec, make_backbone
from imgsim.analysis.clusters import ClusterModel, SuggestedK
from imgsim.collection import Collection, QueryResult, check_compatible, default_index_dir
from imgsim.errors import ImgsimError, SkipReason
from imgsim.analysis.explain import Explanation, heat_overlay, matched_cells
from imgsim.models.resnet50 import FeatureExtractor, WeightsError, how_to_supply_weights, weights_spec
from imgsim.store.generations import CURRENT, index_exists, index_root
from imgsim.serving.policy import plain

APP_DIR = Path(__file__).resolve().parent
DEMO_DIR = APP_DIR / "data" / "demo"
UPLOAD_TYPES = ["jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff"]
GALLERY_PAGE = 24
PICKER_OPTIONS = 2000  # names offered by the more-like-these picker at once
DEMO_EXAMPLE = "mammals/tiger.jpg"  # the demo's first view: a photo with clear neighbours
LOG = logging.getLogger("imgsim.app")
if not LOG.handlers:  # the script reruns; Streamlit configures only its own loggers
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    LOG.addHandler(_handler)
    LOG.setLevel(logging.INFO)
#: Server paths and the names visitors know them by; every message that reaches the page goes through it.
_REDACT: dict[str, str] = {}

st.set_page_config(page_title="imgsim · what looks like this?", page_icon="🔎", layout="wide")


# --- cache wrappers: heavy things load once per process -------------------------------------------------

@st.cache_resource(show_spinner=False)
def open_collection(index_dir: str, generation: str) -> Collection:
    """The index and its search structures; ``generation`` makes a re-index load the new one."""
    return Collection.open(index_dir)


@st.cache_resource(show_spinner="Loading ResNet50…")
def get_extractor(weights: str, pooling: str, precision: str = "float32") -> FeatureExtractor:
    """The model, built once per process (per precision) and only when an upload or indexing needs it."""
    return FeatureExtractor(weights, pooling, precision=precision)


@st.cache_data(show_spinner=False, max_entries=20000)
def thumb_bytes(path: str, mtime_ns: int, px: int, square: str | None = None) -> bytes | None:
    """A JPEG thumbnail of a collection image (None if the file is gone or unreadable)."""
    try:
        return _jpeg(decode.thumbnail(decode.read_bytes(path), px, square=square))
    except decode.DecodeError:
        return None


def _jpeg(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


@st.cache_data(show_spinner=False)
def hover_sprite(index_dir: str, generation: str) -> dict | None:
    """Publish the previews of the drawn points as sprite-sheet tiles (static/cache/), each fetched by the
    browser only when a point on it is first hovered; the first tile is written now, the others in the
    background, so the first render does not grow with the collection.

    None when the index has no previews or the app folder is read-only: hovering then shows names only.
    """
    col = open_collection(index_dir, generation)
    if not col.has_previews():
        return None
    rows = mapview.drawn_rows(col.count)
    cell = 64 if len(rows) <= 10000 else 40
    tiles = mapview.tiles_for(rows)
    prefix = hashlib.sha1((sprite_secret() + index_dir).encode()).hexdigest()[:12]
    cache = APP_DIR / "static" / "cache"
    names = [f"{prefix}-{generation}.jpg"] + [f"{prefix}-{generation}-t{t:04d}.jpg" for t in range(1, len(tiles))]

    def write(t: int) -> None:
        if not (cache / names[t]).exists():
            tmp = cache / f".{names[t]}.tmp"
            col.preview_tile(tiles[t], cell, mapview.TILE_COLUMNS).save(tmp, format="JPEG", quality=80)
            os.replace(tmp, cache / names[t])

    try:
        cache.mkdir(parents=True, exist_ok=True)
        write(0)
        for old in cache.glob(f"{prefix}-*.jpg"):
            if old.name not in names:
                old.unlink(missing_ok=True)
    except OSError:
        return None
    if len(tiles) > 1:
        import threading

        def rest() -> None:
            try:
                for t in range(1, len(tiles)):
                    write(t)
            except OSError:
                LOG.warning("could not write preview tiles to %s", cache)

        threading.Thread(target=rest, daemon=True, name="imgsim-preview-tiles").start()
    return {"urls": [f"app/static/cache/{name}" for name in names], "per_tile": mapview.TILE_ROWS,
            "columns": mapview.TILE_COLUMNS, "cell": cell}


@st.cache_resource(show_spinner=False)
def sprite_secret() -> str:
    """A per-process secret in sprite names; first call empties static/cache/ of earlier processes' files,
    so it only ever holds previews of collections this server is serving."""
    cache = APP_DIR / "static" / "cache"
    if cache.is_dir():
        for old in cache.iterdir():
            if old.is_file():
                old.unlink(missing_ok=True)
    return secrets.token_hex(16)


@st.cache_resource(show_spinner=False)
def job_registry() -> jobs.JobRegistry:
    """Indexing jobs of this server process, shared by every session."""
    return jobs.JobRegistry()


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


@st.cache_data(show_spinner="Checking neighbours against folder labels…")
def evaluation(index_dir: str, generation: str, k: int):
    return open_collection(index_dir, generation).evaluate(k)


@st.cache_data(show_spinner="Finding duplicate groups…")
def duplicate_groups(index_dir: str, generation: str, threshold: float):
    return open_collection(index_dir, generation).duplicate_groups(threshold)


@st.cache_data(show_spinner="Rendering the image grid…")
def grid_png(index_dir: str, generation: str, cell: int) -> bytes:
    image, _ = open_collection(index_dir, generation).grid_image(cell, max_items=900)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@st.cache_resource(show_spinner=False)
def map_component():
    """The map as a custom component: Plotly WebGL + hover thumbnails + click and lasso events."""
    static = APP_DIR / "static"
    bundled = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not (static / "plotly.min.js").exists() and bundled.exists():
        shutil.copyfile(bundled, static / "plotly.min.js")
    html = ('<div class="imgsim-map" style="position:relative">'
            '<div class="imgsim-plot"></div>'
            '<div class="imgsim-tip" style="display:none;position:absolute;z-index:10;pointer-events:none;'
            'background:white;border:1px solid #ccd;border-radius:6px;padding:4px;box-shadow:0 2px 8px #0003;'
            'max-width:170px;font:12px sans-serif;color:#222">'
            '<div class="imgsim-preview" style="width:128px;height:128px;margin-bottom:2px;'
            'background-repeat:no-repeat"></div><span></span></div></div>')
    js = (static / "imgsim_map.js").read_text(encoding="utf-8")
    return st.components.v2.component("imgsim_map", html=html, js=js, isolate_styles=False)


# --- settings ---------------------------------------------------------------------------------------------

def policy() -> serving.Policy:
    """The operator's serving policy: which folders visitors may choose, whether they may index."""
    env_images = os.environ.get("IMGSIM_IMAGES")
    default = Path(env_images).expanduser() if env_images else DEMO_DIR
    return serving.Policy.from_env(default, st.get_option("server.address"))


def settings() -> tuple[Path, Path, str, bool]:
    """(folder, index dir, weights, from environment or default) for this session.

    A folder typed in the sidebar is used only when the operator's roots allow it (see imgsim.serving.policy);
    otherwise the session stays on the server's own collection and the sidebar says the folder is refused.
    """
    weights = os.environ.get("IMGSIM_WEIGHTS") or "imagenet"
    pol = policy()
    typed = st.session_state.get("folder_input", "").strip() if pol.can_choose else ""
    env_index = os.environ.get("IMGSIM_INDEX")
    st.session_state["_folder_refused"] = False
    if typed:
        folder = pol.resolve(typed)
        if folder is not None:
            return folder, default_index_dir(folder, weights), weights, False
        st.session_state["_folder_refused"] = True
    env_images = os.environ.get("IMGSIM_IMAGES")
    if env_index and not env_images and index_exists(env_index):
        return index_root(env_index), Path(env_index), weights, True  # metadata only, not the whole index
    folder = Path(env_images).expanduser() if env_images else DEMO_DIR
    index_dir = Path(env_index).expanduser() if env_index else default_index_dir(folder, weights)
    return folder, index_dir, weights, True


def generation_of(index_dir: Path) -> str:
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


def model_shown(col: Collection) -> str:
    """The index's backbone as visitors may see it: a local preset folder by its name, not its server path."""
    spec = col.backbone
    return plain(f"{spec.name}:{Path(spec.preset).name}" if spec.preset else spec.name)


def weights_name(weights: str) -> str:
    """Weights as a visitor may see them: a file's path stays on the server."""
    return weights if weights == "imagenet" or weights.startswith("random") else "a local weights file"


def set_redactions(folder: Path, index_dir: Path, name: str, weights: str) -> None:
    """Server paths that messages must not show, and what to show instead."""
    _REDACT.clear()
    _REDACT.update({str(index_dir): "(the index)", os.path.realpath(index_dir): "(the index)",
                    str(folder): name, os.path.realpath(folder): name, str(APP_DIR): "(the app)",
                    str(Path.home()): "~"})  # the weights help names the Keras cache under it
    redact_weights(weights)


def redact_weights(weights: str) -> None:
    """A weights file (IMGSIM_WEIGHTS=PATH, or the one an index records) stays on the server: errors quote it."""
    if weights_name(weights) != weights:
        file = Path(weights.strip()).expanduser()
        _REDACT.update({weights.strip(): "(the weights file)", str(file): "(the weights file)",
                        os.path.realpath(file): "(the weights file)"})


def say(text: str) -> str:
    """A message for the page that may quote a server path: those paths replaced by visitor names, and the whole
    shown as text, since it may also quote folder and file names (and what the visitor typed)."""
    return plain(serving.redact(text, _REDACT), 2000)


def skip_detail(skipped) -> str:
    """A skipped file's detail for visitors: a symlink's target can be any server path, so it is not shown
    (the CLI's `info` gives it to the operator)."""
    if skipped.reason in (SkipReason.OUTSIDE, SkipReason.DANGLING, SkipReason.LOOP):
        return "(target not shown)"
    return serving.shorten(serving.redact(skipped.detail, _REDACT))


# --- indexing ---------------------------------------------------------------------------------------------

def start_indexing(folder: Path, index_dir: Path, weights: str, col: Collection | None) -> jobs.JobSnapshot:
    """Start (or attach to) the server-side indexing job of this index folder.

    The model is loaded here, in the script run, so missing weights show at once in this page; the job
    itself runs in a server thread, so a reload or a closed tab neither stops nor restarts it.
    """
    registry = job_registry()
    running = registry.get(str(index_dir))
    if running is not None and running.running:
        return running
    new = col is None
    # The process's cached model (ResNet50 or CLIP, as the index says): an update never builds another one.
    model = get_extractor(weights, "flatten") if new else upload_model(col)
    pooling = "flatten" if new else col.index.pooling

    def factory(w, p, batch_size):
        return model if p == pooling else FeatureExtractor(w, p, batch_size)

    def work(progress):
        from imgsim.build import build_index  # indexing only: opening an existing index never imports it

        return build_index(folder, index_dir, weights=weights if new else None, progress=progress,
                           extractor_factory=factory, model_factory=factory)

    snap = registry.start(str(index_dir), work)
    if running is None or snap.number != running.number:
        LOG.info("indexing job #%d started for %s", snap.number, index_dir)
    registry.wait(str(index_dir), timeout=3.0)  # a small folder finishes inside this run: no progress flash
    return registry.get(str(index_dir)) or snap


@st.fragment(run_every=1.0)
def indexing_progress(index_dir: str) -> None:
    """The job's live progress, polled once a second; the whole page reruns when it has finished."""
    snap = job_registry().get(index_dir)
    if snap is None or not snap.running:
        st.rerun()
    st.progress(snap.fraction, text=snap.describe())
    st.caption(f"Indexing job #{snap.number}, started {time.strftime('%H:%M:%S', time.gmtime(snap.started))} "
               "UTC, runs on the server: every visitor of this collection sees it, and closing or reloading "
               "this page neither stops nor restarts it.")


def job_outcome(snap: jobs.JobSnapshot | None) -> None:
    """What a finished job left for this session: a toast once when it committed, or its error."""
    if snap is None or snap.running:
        return
    if snap.state == jobs.FAILED:
        if time.time() - (snap.finished or 0) > 300:  # an old failure is not news: don't show it forever
            return
        if isinstance(snap.error, WeightsError):
            weights_help(snap.error)
        elif isinstance(snap.error, ImgsimError):
            st.error(say(str(snap.error)))
        else:
            LOG.error("indexing job failed", exc_info=snap.error)
            st.error(f"Indexing failed ({type(snap.error).__name__}). The details are in the server log.")
        return
    seen = st.session_state.setdefault("_jobs_seen", set())
    report = snap.result
    if snap.number not in seen and report is not None and report.committed:
        st.toast(f"Indexed {report.indexed} images ({report.extracted} extracted"
                 + (f" at {report.images_per_second:.1f} images/s" if report.extracted else "") + ")")
    seen.add(snap.number)


def weights_help(error: Exception) -> None:
    st.error("**The model's weights cannot be loaded.** " + say(str(error).split("\n", 1)[0]))
    how = getattr(error, "how_to", None)  # CLIP errors carry their own instructions
    st.markdown("**How to supply them**\n\n"
                + serving.redact(how(markdown=True) if how else how_to_supply_weights(markdown=True), _REDACT))


# --- query state: a relative path (session and URL), resolved to a row on every rerun ---------------------

def set_query_path(path: str) -> None:
    """Make an indexed image the query; a path, not a row, so that it survives a re-index."""
    st.session_state["query_path"] = path
    st.session_state["query_from_link"] = False
    st.query_params["q"] = path
    st.session_state["upload_key"] = st.session_state.get("upload_key", 0) + 1  # clears the uploader


def set_query_row(col: Collection, row: int) -> None:
    """Also a button callback: its arguments are bound when the button is drawn (the collection as shown), so a
    click still means the image it showed after a re-index has moved that image to another row (the key's)."""
    clear_more_like()
    set_query_path(col.paths[int(row)])
    st.session_state["query_row"] = int(row)  # for this generation only: current_query() derives it again


def query_path() -> str | None:
    """The query's relative path: this session's choice, else the shared link's ``q`` (read once)."""
    if "query_path" not in st.session_state:
        st.session_state["query_path"] = st.query_params.get("q") or None
        st.session_state["query_from_link"] = True
    return st.session_state["query_path"]


def current_query(col: Collection) -> int | None:
    """The query's row in the collection as it is now, or None (no query, or the image is gone)."""
    path = query_path()
    row = col.index.row_of(path) if path else None
    st.session_state["query_row"] = row  # derived on every rerun, never carried across index generations
    return row


def query_notice(col: Collection) -> None:
    """Say so when the query's path is not (or no longer) in the collection."""
    path = query_path()
    if path and col.index.row_of(path) is None:
        if st.session_state.get("query_from_link"):
            st.warning(f"The image in the link ({plain(path)}) is not in this collection.")
        else:
            st.warning(f"The query image {plain(path)} is no longer in this collection (the index was updated "
                       "and it was removed or renamed). Pick another image.")


def thumb(col: Collection, row: int, size: int = 256, square: str | None = None) -> bytes | None:
    entry = col.index.entries[row]
    return thumb_bytes(str(col.image_path(row)), entry.mtime_ns, size, square)


def show_image(data: bytes | None, caption: str) -> None:
    st.image(data or _placeholder(), width="stretch")
    st.caption(caption if data else f"{caption} (image file unavailable)")


# --- views ------------------------------------------------------------------------------------------------

def gallery(col: Collection) -> None:
    """Paginated thumbnails with a filename filter; each has a button that makes it the query."""
    needle = st.text_input("Filter by file name", key="gallery_filter", placeholder="e.g. tiger, fruit/").strip().lower()
    rows = col.rows_matching(needle)
    if not len(rows):
        st.info(f"No file name contains “{plain(needle)}”.")
        return
    pages = (len(rows) + GALLERY_PAGE - 1) // GALLERY_PAGE
    page = st.number_input(f"Page (of {pages})", 1, pages, 1, key="gallery_page") if pages > 1 else 1
    shown = [int(r) for r in rows[(page - 1) * GALLERY_PAGE: page * GALLERY_PAGE]]
    st.caption(f"{len(rows):,} image(s)" + (f" matching “{plain(needle)}”" if needle else ""))
    for start in range(0, len(shown), 8):
        cols = st.columns(8)
        for c, row in zip(cols, shown[start:start + 8]):
            with c:
                st.image(thumb(col, row, 160, square="pad") or _placeholder(), width="stretch")
                st.button(plain(_short(col.paths[row].rsplit("/", 1)[-1], 18)), key=f"pick_{row}",
                          width="stretch", help=f"Search with {plain(col.paths[row])}", type="tertiary",
                          on_click=set_query_row, args=(col, row))


def _short(name: str, limit: int = 16) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


@st.cache_data(show_spinner=False)
def _placeholder() -> bytes:
    from PIL import Image

    return _jpeg(Image.new("RGB", (160, 120), (235, 238, 242)))


def results_grid(col: Collection, result: QueryResult, key: str, can_explain: bool = False) -> None:
    """Result cards: rank, distance and cosine on a line each; Similar, Why? and more/less like this.

    Three to a row: at 1280 px with the sidebar open, four leave too little room for 'distance 0.123'.
    """
    per_row = 3
    card_style()
    for start in range(0, len(result.neighbors), per_row):
        cols = st.columns(per_row)
        for c, n in zip(cols, result.neighbors[start:start + per_row]):
            with c, st.container(border=True, key=f"card_{key}_{n.row}"):
                st.image(thumb(col, n.row, 256, square="pad") or _placeholder(), width="stretch")
                st.markdown(f":small[**#{n.rank}**]  \n:small[distance **{n.distance:.3f}**]  \n"
                            f":small[cos {n.similarity:.3f}]")
                st.caption(plain(_short(n.path, 34)))
                if result.row != n.row:
                    st.button("Similar", key=f"{key}_{n.row}", width="stretch", help=f"Search with {plain(n.path)}",
                              on_click=set_query_row, args=(col, n.row))
                card_actions(col, result, n.row, key, can_explain)


def preload_plotly() -> None:
    """A placeholder the map replaces, whose only work is to start loading Plotly.js in the browser (about a
    second of parsing with software rendering) before the page's map data arrives."""
    map_component()(key="plotly_preload", data={"preload": True}, default={}, height=560)


def draw_map(col: Collection, index_dir: Path, generation: str, key: str, height: int,
             query: int | list[int] | None, neighbours: list[int], ranks: list[int] | None = None) -> list[int]:
    """The interactive map; a click makes that image the query. Returns the lasso/box selection.

    ``ranks`` number the neighbours' rings as their result cards are numbered."""
    overlay = charts.map_overlay(col.map_xy(), col.paths, query, neighbours, native_hover=False, ranks=ranks)
    result = map_component()(key=key, data={"base": map_base_json(str(index_dir), generation, height),
                                            "overlay": go.Figure(data=overlay).to_json(),
                                            "paths": col.paths if col.count <= mapview.MAP_POINTS else [],
                                            "points": int(min(col.count, mapview.MAP_POINTS)), "height": height,
                                            "sprite": hover_sprite(str(index_dir), generation),
                                            "generation": generation},
                             default={"selection": []}, height=height + 10,
                             on_clicked_change=lambda: None, on_selection_change=lambda: None)
    clicked = result.clicked
    if clicked is not None and clicked != st.session_state.get(f"{key}_last_click"):
        st.session_state[f"{key}_last_click"] = clicked
        row = map_rows(clicked, generation)
        if row is None:
            st.toast("The collection was re-indexed since the map was drawn: click the point again.")
        elif len(row) == 1 and 0 <= row[0] < col.count and row[0] != st.session_state.get("query_row"):
            set_query_row(col, row[0])
            st.rerun()
    return [r for r in (map_rows(result.selection, generation) or []) if 0 <= r < col.count]


def map_rows(value, generation: str) -> list[int] | None:
    """Rows from a map event: ``[generation, row]`` (a click), ``{generation, rows}`` (a selection) or bare
    rows; None when they were drawn from another generation (a re-index renumbers rows)."""
    if isinstance(value, dict):
        if value.get("generation", generation) != generation:
            return None
        value = value.get("rows") or []
    elif isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str):
        if value[0] != generation:
            return None
        value = [value[1]]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    # Sent by the browser, so anything may arrive: only whole numbers are rows.
    return [int(r) for r in value if isinstance(r, int) and not isinstance(r, bool)
            or isinstance(r, float) and r.is_integer()]


# --- search by describing (CLIP indexes) -------------------------------------------------------------------

def _text_changed() -> None:
    """Typing a description makes it the query: remember which image query it replaces, clear the upload."""
    st.session_state["text_over_row"] = st.session_state.get("query_row")
    st.session_state["upload_key"] = st.session_state.get("upload_key", 0) + 1


def text_box(col: Collection) -> str | None:
    """The description to search with, or None; picking an image afterwards clears it (and ?text= with it)."""
    if "text_over_row" in st.session_state and st.session_state["text_over_row"] != st.session_state.get("query_row"):
        st.session_state["text"] = ""  # an image was picked since the text was typed: the image is the query
        del st.session_state["text_over_row"]
    text = st.text_input("Describe what you are looking for", key="text", bind="query-params",
                         on_change=_text_changed, placeholder="e.g. a red car at night",
                         help=f"Search by text with this index's {model_shown(col)} model; press Enter.")
    text = " ".join((text or "").split())
    if text and "text_over_row" not in st.session_state:  # from a shared link
        st.session_state["text_over_row"] = st.session_state.get("query_row")
    return text or None


@st.cache_data(show_spinner="Embedding the description…", max_entries=64)
def embed_text(index_dir: str, generation: str, text: str):
    """A description's vector from the index's own CLIP model, computed once per text."""
    col = open_collection(index_dir, generation)
    return col.embed_text(text, model=lambda: upload_model(col))


def search_tab(col: Collection, index_dir: Path, generation: str, weights: str) -> None:
    text = text_box(col) if col.supports_text else None
    top_left, top_right = st.columns([1, 1], gap="large")
    with top_left:
        upload = st.file_uploader("Upload an image to search with", type=UPLOAD_TYPES,
                                  key=f"upload_{st.session_state.get('upload_key', 0)}")
    with top_right:
        k = st.slider("Number of results (k)", 1, 50, 8, key="k", bind="query-params")
    examples = more_like(col)
    example_row = None
    typed = st.session_state.get("text", "") if col.supports_text else ""
    if upload is None and text is None and not typed and examples is None and query_path() is None:
        example_row = first_view_row(col)  # the first view is already answered (until the visitor types)
    with st.expander("Pick an image from the collection", expanded=upload is None and text is None
                     and examples is None and current_query(col) is None and example_row is None):
        gallery(col)
    more_like_picker(col, examples)
    left, right = st.columns([3, 2], gap="large")
    with right:
        st.markdown("**Map of the collection** · hover for a preview, click a point to search with it")
        map_slot = st.empty()
        if not st.session_state.get("plotly_preloaded"):  # once per page: later reruns keep the map mounted
            st.session_state["plotly_preloaded"] = True
            with map_slot:  # the browser starts loading Plotly now, while the server finds the results
                preload_plotly()
    with left:
        result, query_caption, query_data, source = None, "", None, None
        if text is not None and upload is None:
            try:
                embedded = embed_text(str(index_dir), generation, text)
                result = col.neighbors_of_vector(embedded.vector, k)
                query_caption = f"text: “{plain(embedded.text, 300)}”"  # from the URL too: untrusted
                if embedded.truncated:
                    st.info(plain(embedded.note, 1000))  # it quotes the text, which may come from the URL
            except WeightsError as exc:
                weights_help(exc)
            except ImgsimError as exc:
                st.error(say(str(exc)))
        elif upload is not None:
            data = upload.getvalue()  # in memory only: never written to disk under its name
            try:
                embedded = embed_upload(str(index_dir), generation, data)
                result = col.query_embedded(embedded, k)
                query_caption, query_data = f"uploaded: {plain(upload.name)}", upload_thumb(data)
                source = embedded[0] if embedded[0] is not None else data
            except decode.DecodeError as exc:
                st.error(say(f"That upload cannot be used: {exc}."))
            except WeightsError as exc:
                weights_help(exc)
        elif examples is not None:
            result = more_like_result(col, examples, k)
            query_caption, query_data = more_like_caption(col, examples), thumb(col, examples[0][0], 256)
        else:
            row = current_query(col)
            row = example_row if row is None else row
            if row is not None:
                result = col.neighbors_of_row(row, k)
                query_caption, query_data, source = f"query: {plain(col.paths[row])}", thumb(col, row, 256), row
        if example_row is not None and result is not None:
            st.info(f"An example to start with: the images nearest to {plain(col.paths[example_row])}. "
                    + ("Describe what you are looking for, pick" if col.supports_text else "Pick")
                    + " an image above, upload one, or click a point on the map.", icon=":material/lightbulb:")
        if result is None:
            st.info(("Describe what you are looking for, pick" if col.supports_text else "Pick")
                    + " an image above, upload one, or click a point on the map.")
        else:
            q1, q2 = st.columns([1, 3])
            with q1:
                if query_caption.startswith("text: "):
                    st.markdown(f"**Described:**  \n{query_caption[6:]}")
                else:
                    st.image(query_data or _placeholder(), width="stretch")
            with q2:  # the query's name beside its image, where it has room (no mid-word wrapping)
                if not query_caption.startswith("text: "):
                    st.caption(query_caption if query_data else f"{query_caption} (image file unavailable)")
                st.markdown(f"**{len(result.neighbors)} nearest images** (k = {result.k}"
                            + (f", clamped from {k}" if result.k < k else "") + ").")
                if col.search_method == "ann":  # "nearest" is a claim only exact search makes
                    st.caption(f"Found by approximate search: usually, not always, the true nearest (recall@10 "
                               f"{col.search_info().get('recall_at_10')}, measured when the index was built). "
                               "The distances are exact.")
                st.caption("Distance: Euclidean between unit feature vectors (0 = identical, 2 = opposite). "
                           "cos: cosine similarity.")
            why_slot = st.container()  # above the cards, filled after them: a card's Why? sets what it shows
            results_grid(col, result, key="more", can_explain=source is not None and col.can_explain)
            with why_slot:
                why_panel(col, index_dir, generation, result, source)
    with map_slot:
        query_row = result.row if result is not None else None
        shown = [n for n in result.neighbors if n.row != query_row] if result is not None else []
        stars = examples[0] if examples is not None and upload is None and text is None else query_row
        draw_map(col, index_dir, generation, "search_map", 560, stars, [n.row for n in shown],
                 ranks=[n.rank for n in shown])


@st.cache_data(show_spinner="Embedding the upload…", max_entries=32)
def embed_upload(index_dir: str, generation: str, data: bytes):
    """An upload's vector (or its row, when it is an indexed file), computed once, not on every rerun."""
    col = open_collection(index_dir, generation)
    return col.embed_bytes(data, extractor=lambda: upload_model(col), decoder=decode.upload_model_input)


@st.cache_data(show_spinner=False, max_entries=32)
def upload_thumb(data: bytes) -> bytes:
    return _jpeg(decode.upload_thumbnail(data, 256))


@st.cache_resource(show_spinner="Loading CLIP…")
def get_backbone_model(backbone: str, weights: str, pooling: str):
    """A non-ResNet50 backbone (CLIP), built once per process when an upload or a description needs it."""
    return make_backbone(BackboneSpec.parse(backbone), weights, pooling)


def upload_model(col: Collection) -> FeatureExtractor:
    """The cached model with this index's backbone, weights and pooling (refused if its weights differ)."""
    if col.backbone.name != "resnet50":
        model = get_backbone_model(col.backbone.spec, weights_spec(col.index.weights), col.index.pooling)
        check_compatible(col, model)
        return model
    # The index's own precision: an update must never add vectors computed in another one.
    model = get_extractor(weights_spec(col.index.weights), col.index.pooling, col.index.meta.get("precision") or "float32")
    check_compatible(col, model)
    return model


def map_tab(col: Collection, index_dir: Path, generation: str) -> None:
    view = st.segmented_control("View", ["Scatter", "Image grid"], default="Scatter", key="map_view")
    if view == "Image grid":
        png = grid_png(str(index_dir), generation, 64)
        st.download_button("Download PNG", png, file_name="imgsim-tsne-grid.png", mime="image/png",
                           on_click="ignore")
        st.image(png, caption="t-SNE map snapped to a grid (up to 900 images)", width="stretch")
        return
    st.caption("Lasso or box-select points (toolbar at the top right) to list them below; scroll to zoom.")
    query = current_query(col)
    selection = draw_map(col, index_dir, generation, "full_map", 700, query, [])
    if selection:
        st.markdown(f"**{len(selection)} selected image(s)**")
        st.download_button("Download selection as CSV", export.selection_csv(col.paths, col.labels, col.map_xy(),
                                                                              selection),
                           file_name="imgsim-selection.csv", mime="text/csv", on_click="ignore")
        if st.button("More like these", key="lasso_more_like", icon=":material/thumb_up:",
                     help="Search with the selected images together (Search tab)"):
            set_more_like(col, [col.paths[r] for r in selection[:50]], [])
            st.rerun()
        for start in range(0, min(len(selection), 48), 8):
            cols = st.columns(8)
            for c, row in zip(cols, selection[start:start + 8]):
                with c:
                    show_image(thumb(col, row, 160, square="pad"), plain(col.paths[row]))
        if len(selection) > 48:
            st.caption(f"… and {len(selection) - 48} more in the CSV.")


def duplicates_tab(col: Collection, index_dir: Path, generation: str) -> None:
    nearest = col.nearest_distances()
    left, right = st.columns([1, 2], gap="large")
    with left:
        threshold = st.slider("Distance threshold", 0.0, 1.0, 0.15, 0.01, key="t", bind="query-params",
                              help="Two images closer than this are linked; linked images form a group.")
        groups = duplicate_groups(str(index_dir), generation, float(threshold))
        in_groups = sum(len(g.rows) for g in groups)
        st.metric("Groups", len(groups), help="connected components of images within the threshold")
        st.caption(f"{in_groups} of {col.count} images are in a group.")
        if not groups and len(nearest):
            st.info(f"No two images are within {threshold:.2f} of each other: the closest pair is "
                    f"{float(nearest.min()):.3f} apart. Raise the threshold to see groups.")
        if groups:
            st.download_button("Download groups as CSV", lambda: export.groups_csv(col.paths, groups, threshold),
                               file_name="imgsim-duplicates.csv", mime="text/csv", on_click="ignore")
    with right:
        st.plotly_chart(charts.distance_histogram(nearest, threshold), width="stretch", key="dup_hist")
    for number, g in enumerate(groups[:40], start=1):
        st.markdown(f"**Group {number}** · {len(g.rows)} images")
        cols = st.columns(min(8, max(len(g.rows), 4)))
        for c, row, d in zip(cols, g.rows[:8], g.nearest[:8]):
            with c:
                show_image(thumb(col, row, 160, square="pad"), f"{plain(col.paths[row])} · nearest {d:.3f}")
        if len(g.rows) > 8:
            st.caption(f"… and {len(g.rows) - 8} more in the CSV.")
    if len(groups) > 40:
        st.caption(f"Showing 40 of {len(groups)} groups; the CSV has all of them.")


def about_tab(col: Collection, index_dir: Path, generation: str) -> None:
    meta = col.index.meta
    st.markdown(f"**{col.count} images** from {plain(policy().display_name(col.index.root))} · "
                f"model {meta['backbone']}"
                + (f" (preset {serving.code(Path(meta['preset']).name)})" if meta.get("preset") else "")
                + f" ({col.index.pooling}, {col.index.dims:,} values per image) · "
                f"weights: {say(col.weights_label)} · updated {meta['updated']}")  # may name a local preset
    st.markdown(col.search_summary())
    ev = evaluation(str(index_dir), generation, 5)
    st.subheader("Do neighbours share a folder?")
    if ev.queries == 0:
        st.info("This collection has no sub-folders, so there are no labels to check neighbours against.")
    else:
        if col.is_random:
            st.warning("These figures come from random weights: they measure colour and texture statistics, "
                       "not what the images show.")
        a, b, c = st.columns(3)
        a.metric(f"precision@{ev.k}", f"{ev.precision_at_k:.3f}", help="share of the k nearest (the image itself "
                 "not counted) that are in the query's sub-folder")
        b.metric("1-NN accuracy", f"{ev.nn_accuracy:.3f}")
        c.metric(f"random ranking (expected)", f"{ev.baseline_precision_at_k:.3f}")
        st.dataframe([{"folder": s.label, "images": s.images, f"precision@{ev.k}": s.precision_at_k,
                       "1-NN accuracy": s.nn_accuracy, "random": s.baseline}
                      for s in ev.per_label], hide_index=True, width="stretch",
                     column_config={name: st.column_config.NumberColumn(format="%.3f")
                                    for name in (f"precision@{ev.k}", "1-NN accuracy", "random")})
        st.caption(f"Same numbers as `python -m imgsim evaluate INDEX_DIR -k {ev.k}`.")
    if col.index.skipped:
        st.subheader(f"Skipped files ({len(col.index.skipped)})")
        st.dataframe([{"file": serving.shorten(s.path), "reason": s.reason.value, "detail": skip_detail(s)}
                      for s in col.index.skipped],
                     hide_index=True, width="stretch")


# --- exploration: first view, result-card actions, why similar, more like these, clusters, odd ones out ---

CARD_CSS = """<style>
[class*="st-key-card_"] [data-testid="stMarkdownContainer"] p { white-space: nowrap; overflow-wrap: normal;
  word-break: keep-all; line-height: 1.35; }
[class*="st-key-card_"] [data-testid="stCaptionContainer"] p { overflow: hidden; text-overflow: ellipsis;
  white-space: nowrap; }
[class*="st-key-card_"] button p { white-space: nowrap; }
[class*="st-key-card_"] [data-testid="stButton"] button { padding-left: 0.3rem; padding-right: 0.3rem;
  min-width: 0; }
[class*="st-key-actions_"] { justify-content: space-between; flex-wrap: nowrap; }
</style>"""


def card_style() -> None:
    """Result cards keep each figure on its line: no wrapping inside 'distance 0.123' or 'Similar'."""
    st.html(CARD_CSS)


def first_view_row(col: Collection) -> int | None:
    """The example shown before anyone chooses: the demo's tiger, another folder's most central image."""
    if col.index.root.resolve() == DEMO_DIR.resolve():
        row = col.index.row_of(DEMO_EXAMPLE)
        if row is not None:
            return row
    return col.central_row()


def clear_more_like() -> None:
    st.session_state["more_like"] = None
    if "not" in st.query_params:
        del st.query_params["not"]


def set_more_like(col: Collection, positives: list[str], negatives: list[str]) -> None:
    """Make several images (and images to avoid) the query; relative paths, also in the URL."""
    positives = list(dict.fromkeys(positives))
    negatives = [p for p in dict.fromkeys(negatives) if p not in positives]
    if len(positives) == 1 and not negatives:
        row = col.index.row_of(positives[0])
        if row is not None:
            set_query_row(col, row)
            return
    st.session_state["more_like"] = {"q": positives, "not": negatives}
    st.session_state["query_row"] = None
    st.session_state["query_path"] = None  # the one-image query gives way to these
    st.query_params["q"] = positives
    if negatives:
        st.query_params["not"] = negatives
    elif "not" in st.query_params:
        del st.query_params["not"]
    st.session_state["upload_key"] = st.session_state.get("upload_key", 0) + 1  # clears the uploader


def more_like(col: Collection) -> tuple[list[int], list[int]] | None:
    """(positive rows, negative rows) of a 'more like these' query, or None for a one-image query.

    A link with several ``q`` or any ``not`` is read once per session.
    """
    if "more_like" not in st.session_state:
        qs, nots = st.query_params.get_all("q"), st.query_params.get_all("not")
        st.session_state["more_like"] = {"q": qs, "not": nots} if len(qs) > 1 or nots else None
    state = st.session_state.get("more_like")
    if not state:
        return None
    missing = [p for p in state["q"] + state["not"] if col.index.row_of(p) is None]
    if missing:
        st.warning(f"Not in this collection, left out: {plain(', '.join(missing))}.")
    pos = [col.index.row_of(p) for p in state["q"] if col.index.row_of(p) is not None]
    neg = [col.index.row_of(p) for p in state["not"] if col.index.row_of(p) is not None]
    return (pos, neg) if pos else None


def more_like_result(col: Collection, examples: tuple[list[int], list[int]], k: int) -> QueryResult:
    pos, neg = examples
    return col.query_examples([(r, None) for r in pos], [(r, None) for r in neg], k)


def more_like_caption(col: Collection, examples: tuple[list[int], list[int]]) -> str:
    """'more like: a, b · not like: c': the images the query was made of (a link's names left out are not),
    escaped, since the names come from the URL or the folder."""
    pos, neg = examples
    return ("more like: " + ", ".join(plain(col.paths[r]) for r in pos)
            + (" · not like: " + ", ".join(plain(col.paths[r]) for r in neg) if neg else ""))


def current_positives(col: Collection, result: QueryResult) -> tuple[list[str], list[str]]:
    """The examples a thumbs-up/down adds to: the current 'more like these' query, else the one image."""
    state = st.session_state.get("more_like")
    if state:
        return list(state["q"]), list(state["not"])
    return ([col.paths[result.row]] if result.row is not None else []), []


def card_actions(col: Collection, result: QueryResult, row: int, key: str, can_explain: bool) -> None:
    """Why? (a per-cell explanation) and more/less like this, under one result."""
    path = col.paths[row]
    pos, neg = current_positives(col, result)
    # Callbacks with the paths bound now (see set_query_row): the keys are rows, which a re-index moves.
    with st.container(horizontal=True, gap=None, key=f"actions_{key}_{row}"):
        if can_explain and result.row != row:
            st.button("Why?", key=f"{key}_why_{row}", type="tertiary",
                      help="Which parts of the two images make them similar", on_click=show_why, args=(path,))
        st.button("", key=f"{key}_pos_{row}", icon=":material/thumb_up:", type="tertiary",
                  help=f"More like this: add {plain(path)} to the query",
                  on_click=set_more_like, args=(col, pos + [path], [p for p in neg if p != path]))
        st.button("", key=f"{key}_neg_{row}", icon=":material/thumb_down:", type="tertiary",
                  help=f"Less like this: results should not look like {plain(path)}",
                  on_click=set_more_like if pos else None,
                  args=(col, [p for p in pos if p != path] or pos, neg + [path]))


def show_why(path: str) -> None:
    st.session_state["why"] = path


def more_like_picker(col: Collection, examples: tuple[list[int], list[int]] | None) -> None:
    """Choose positives and negatives by name (the gallery's names; results and the map lasso add to them)."""
    state = st.session_state.get("more_like") or {}
    with st.expander("More like these: search with several images", expanded=examples is not None):
        st.caption("The query becomes the normalised mean of the images to look like, minus half the mean of the "
                   "images to avoid (Rocchio). 👍/👎 under a result, or **More like these** after a lasso "
                   "selection on the Map tab, add to these lists.")
        chosen_pos = [p for p in state.get("q", []) if col.index.row_of(p) is not None]
        chosen_neg = [p for p in state.get("not", []) if col.index.row_of(p) is not None]
        options = col.paths
        if col.count > PICKER_OPTIONS:  # every option travels to the browser on each rerun: offer a bounded list
            needle = st.session_state.get("gallery_filter", "").strip()
            matches = [col.paths[int(r)] for r in col.rows_matching(needle, PICKER_OPTIONS)] if needle else []
            options = list(dict.fromkeys(chosen_pos + chosen_neg + matches))
            st.caption(f"{col.count:,} images: type part of a name in the gallery's filter above to list them here.")
        a, b = st.columns(2)
        with a:
            pos = st.multiselect("Look like", options, default=chosen_pos,
                                 key=f"ml_pos_{st.session_state.get('ml_key', 0)}")
        with b:
            neg = st.multiselect("Not like", options, default=chosen_neg,
                                 key=f"ml_neg_{st.session_state.get('ml_key', 0)}")
        c1, c2 = st.columns(2)
        if c1.button("Search with these", key="ml_go", disabled=not pos, width="stretch"):
            set_more_like(col, pos, neg)
            st.session_state["ml_key"] = st.session_state.get("ml_key", 0) + 1
            st.rerun()
        if examples is not None and c2.button("Back to one image", key="ml_clear", width="stretch"):
            set_query_row(col, examples[0][0])
            st.rerun()


@st.cache_data(show_spinner=False, max_entries=64)
def explanation(index_dir: str, generation: str, a: int | bytes, b: int) -> Explanation:
    """The per-cell explanation of a query (row or upload bytes) and a result row."""
    col = open_collection(index_dir, generation)
    return col.explain(a, b, extractor=lambda: upload_model(col), decoder=decode.upload_model_input)


@st.cache_data(show_spinner=False, max_entries=16)
def model_view(index_dir: str, generation: str, source: int | bytes):
    """The image as the model sees it (squashed to 224x224), for drawing the 7x7 grid on: decoded once, an
    upload with the bounded-memory decoder every upload goes through."""
    from PIL import Image

    if isinstance(source, bytes):
        return Image.fromarray(decode.upload_model_input(source))
    col = open_collection(index_dir, generation)
    return Image.fromarray(decode.model_input(decode.read_bytes(col.image_path(int(source)))))


def why_panel(col: Collection, index_dir: Path, generation: str, result: QueryResult, source: int | bytes | None
              ) -> None:
    """The query and the chosen result with a 7x7 heat overlay of each cell's part in their similarity."""
    path = st.session_state.get("why")
    row = col.index.row_of(path) if path else None
    if source is None or row is None or not col.can_explain or row not in {n.row for n in result.neighbors}:
        return
    with st.container(border=True, key="why_panel"):
        head, close = st.columns([5, 1])
        head.markdown(f"**Why is {plain(path)} similar to the query?**")
        if close.button("Close", key="why_close", width="stretch"):
            st.session_state["why"] = None
            st.rerun()
        try:
            if col.index.pooling == "avg":
                with st.spinner("Loading ResNet50 to compute both 7×7×2048 feature maps: this index stores "
                                "pooled vectors, so the model is needed…"):
                    e = explanation(str(index_dir), generation, source, row)
            else:
                e = explanation(str(index_dir), generation, source, row)
            left_img = model_view(str(index_dir), generation, source)
            right_img = model_view(str(index_dir), generation, row)
        except WeightsError as exc:
            weights_help(exc)
            return
        except decode.DecodeError as exc:
            st.error(say(f"The image cannot be read again: {exc}."))
            return
        a, b = st.columns(2)
        a.image(heat_overlay(left_img, e.cells), caption="query", width="stretch")
        b.image(heat_overlay(right_img, matched_cells(e)), caption=plain(path), width="stretch")  # Markdown
        st.markdown(e.describe())
        if e.mode == "flatten":
            st.caption("Red: each of the 7×7 cells' part of the cosine (the same cell in both images). The 49 "
                       "parts add up to the cosine exactly.")
        else:
            st.caption("Red, left: how well each cell of the query matches its best cell in the result; right: the "
                       "cells it matched.")
        if col.is_random:
            st.caption("Random weights: the cells show colour and texture statistics, not objects.")


@st.cache_data(show_spinner="Choosing a k: silhouette scores on a sample…")
def suggested_k(index_dir: str, generation: str) -> SuggestedK:
    return open_collection(index_dir, generation).suggest_k()


@st.cache_resource(show_spinner="Clustering…", max_entries=16)
def cluster_model(index_dir: str, generation: str, k: int) -> ClusterModel:
    return open_collection(index_dir, generation).clusters(k)


@st.cache_data(show_spinner=False)
def cluster_map_json(index_dir: str, generation: str, k: int, height: int) -> str:
    col = open_collection(index_dir, generation)
    model = cluster_model(index_dir, generation, k)
    width = len(str(model.k_))
    names = [f"cluster {int(c) + 1:0{width}d}" for c in model.labels_]
    paths = [html.escape(p, quote=False) for p in col.paths]  # Plotly's hover reads its HTML subset
    return charts.map_base(col.map_xy(), names, paths, height=height).to_json()


def clusters_tab(col: Collection, index_dir: Path, generation: str) -> None:
    if col.count < 2:
        st.info("Clusters need at least two images.")
        return
    if not col.can_cluster:
        st.info(f"Clusters need the PCA coordinates of every image, which this index does not keep: it answers "
                f"queries with approximate search ({col.count:,} images). Build an index with `--search exact` "
                "to cluster it.")
        return
    suggestion = suggested_k(str(index_dir), generation)
    left, right = st.columns([1, 2], gap="large")
    with left:
        top = max(2, min(50, col.count))
        k = st.number_input("Number of clusters (k)", 1, top, min(max(suggestion.k, 1), top), key="ck",
                            help="k-means on the PCA-compressed feature vectors")
        if suggestion.scores:
            st.caption(f"Suggested: k = {suggestion.k}, the best silhouette score for k from "
                       f"{min(suggestion.scores)} to {max(suggestion.scores)} on {suggestion.sample_size} images.")
        model = cluster_model(str(index_dir), generation, int(k))
        st.metric("Clusters", model.k_)
        st.download_button("Download clusters as CSV",  # made when pressed: every image, one line each
                           lambda: export.clusters_csv(col.paths, model.labels_, model.distances_),
                           file_name="imgsim-clusters.csv", mime="text/csv", on_click="ignore")
        st.caption(f"`python -m imgsim cluster INDEX_DIR --k {model.k_} --out DIR --link` lays them out in "
                   "folders (symlinks; originals untouched).")
    with right:
        st.plotly_chart(pio.from_json(cluster_map_json(str(index_dir), generation, model.k_, 420)),
                        width="stretch", key="cluster_map")
    opened = st.session_state.get("cluster_open")
    if opened is not None and opened < model.k_:
        head, close = st.columns([5, 1])
        members = model.members(opened)
        head.subheader(f"Cluster {opened + 1} · {len(members)} images, nearest to its centre first")
        if close.button("Back to all clusters", key="cluster_close", width="stretch"):
            st.session_state["cluster_open"] = None
            st.rerun()
        image_rows(col, members[:96], lambda r: f"{plain(col.paths[r])} · {model.distances_[r]:.3f}", key="cl")
        if len(members) > 96:
            st.caption(f"… and {len(members) - 96} more in the CSV.")
        return
    for c in range(model.k_):
        head, action = st.columns([5, 1])
        head.markdown(f"**Cluster {c + 1}** · {int(model.sizes_[c])} images")
        if action.button("Open", key=f"cluster_{c}", width="stretch", help="Show every image of this cluster"):
            st.session_state["cluster_open"] = c
            st.rerun()
        image_rows(col, model.central(c, 8), lambda r: plain(col.paths[r]), key=f"c{c}", limit=8)


def image_rows(col: Collection, rows, caption, key: str, limit: int | None = None, per_row: int = 8) -> None:
    """Thumbnails, ``per_row`` to a line, each with a caption and a button that searches with it."""
    rows = list(rows)[:limit]
    for start in range(0, len(rows), per_row):
        cols = st.columns(per_row)
        for c, row in zip(cols, rows[start:start + per_row]):
            with c:
                show_image(thumb(col, int(row), 160, square="pad"), caption(int(row)))


def outliers_tab(col: Collection, index_dir: Path, generation: str) -> None:
    st.caption("The images farthest from their 5 nearest neighbours: unusual, mislabelled or broken files.")
    n = st.slider("How many", 1, max(1, min(200, col.count)), min(24, col.count), key="odd_n") \
        if col.count > 1 else 1
    found = col.outliers(int(n))
    st.download_button("Download as CSV", export.outliers_csv(col.paths, found), file_name="imgsim-odd-ones-out.csv",
                       mime="text/csv", on_click="ignore")
    by_row = {o.row: o for o in found}
    image_rows(col, [o.row for o in found],
               lambda r: f"#{by_row[r].rank} {plain(col.paths[r])} · mean {by_row[r].score:.3f} · nearest {by_row[r].nearest:.3f}",
               key="odd")


# --- page -------------------------------------------------------------------------------------------------

def sidebar(folder: Path, index_dir: Path, weights: str, col: Collection | None) -> bool:
    """Collection settings; returns True when the user asked to (re)index (only where the operator allows it)."""
    pol = policy()
    with st.sidebar:
        st.header("Collection")
        if pol.can_choose:
            st.text_input("Image folder", key="folder_input", placeholder=pol.display_name(folder),
                          help="A folder under " + ", ".join(plain(r.name) for r in pol.roots)
                               + "; sub-folders become colours on the map and labels for the check.")
            if st.session_state.get("_folder_refused"):
                st.error(serving.REFUSED)
        st.caption(f"Collection: {plain(pol.display_name(folder))}  \n"
                   f"Weights for new indexes: {weights_name(weights)}")
        if col is not None:
            st.markdown(f"**{col.count}** images · {len(col.index.skipped)} skipped · pooling `{col.index.pooling}`")
            if col.is_random:
                st.badge("random weights", color="orange", icon=":material/warning:")
        if not pol.allow_indexing:
            return False
        return st.button("Update index" if col is not None else "Index this folder", width="stretch",
                         help="Extracts only new or changed images; deleted ones are dropped.")


def login_gate() -> bool:
    """With IMGSIM_REQUIRE_LOGIN=1, only visitors signed in through Streamlit's OIDC login (st.login, configured
    in .streamlit/secrets.toml [auth]) see the collection; True when the page may go on."""
    if (os.environ.get("IMGSIM_REQUIRE_LOGIN") or "").strip().lower() not in ("1", "true", "yes", "on"):
        return True
    if st.user.get("is_logged_in", False):  # the attribute exists only once [auth] is configured
        with st.sidebar:
            st.caption(f"Signed in as {plain(str(st.user.get('email') or st.user.get('name') or 'you'))}")
            st.button("Log out", on_click=st.logout)
        return True
    st.info("This collection is private. Sign in to see it.")
    st.button("Log in", on_click=st.login, type="primary")
    return False


def main() -> None:
    st.title("imgsim")
    st.caption("What looks like this? Nearest neighbours by ResNet50 or CLIP features, and a t-SNE map of your images.")
    sprite_secret()  # first run of this process: previews left in static/cache/ by earlier servers are removed
    if not login_gate():
        return
    folder, index_dir, weights, automatic = settings()
    name = policy().display_name(folder)
    set_redactions(folder, index_dir, name, weights)
    exists = index_exists(index_dir)
    col = current_collection(index_dir) if exists else None
    if col is not None:  # an index built from another folder names it in its refusal: a server path too
        _REDACT.setdefault(str(col.index.root), "(the folder this index was built from)")
    wants_index = sidebar(folder, index_dir, weights, col)
    if not folder.is_dir():
        st.error(f"The collection's image folder ({plain(name)}) is not available on this server.")
        return
    job = job_registry().get(str(index_dir))
    retry_failed = job is None or job.state != jobs.FAILED or time.time() - (job.finished or 0) > 30
    if wants_index or (not exists and automatic and retry_failed and not (job and job.state == jobs.DONE)):
        try:
            job = start_indexing(folder, index_dir, weights, col)
        except WeightsError as exc:
            weights_help(exc)
            if not exists:
                return
    if job is not None and job.running:
        indexing_progress(str(index_dir))
        if not exists:
            return
    job_outcome(job)
    exists = index_exists(index_dir)
    if exists:
        col = current_collection(index_dir)
    if not exists:
        if job is not None and job.state == jobs.FAILED:
            return
        if policy().allow_indexing:
            st.info(f"{plain(name)} has no index yet. Press **Index this folder** in the sidebar.")
        else:
            st.info(f"{plain(name)} has no index yet, and indexing from the page is turned off on this server. "
                    "Its operator can build one with `python -m imgsim index`.")
        return
    generation = generation_of(index_dir)
    redact_weights(weights_spec(col.index.weights))  # an upload loads these
    if col.backbone.preset and os.sep in col.backbone.preset:  # a local CLIP preset: the index records its path
        _REDACT[col.backbone.preset] = Path(col.backbone.preset).name
    if col.is_random:
        st.warning("**Random weights.** This index was built with seeded random weights (IMGSIM_WEIGHTS=random): "
                   "everything runs, but the similarities are not meaningful. See the README to use ImageNet "
                   "weights.", icon=":material/warning:")
    if col.count == 0:
        st.info(f"No usable images in {serving.code(name)}: {len(col.index.skipped)} skipped, "
                f"{col.index.meta.get('ignored', 0)} other files ignored.")
        for s in col.index.skipped[:50]:
            st.caption(f"{plain(s.path)}: {s.reason.value}")
        return
    query_notice(col)
    search, map_, clusters, dups, odd, about = st.tabs(
        ["Search", "Map", "Clusters", "Duplicates", "Odd ones out", "About this collection"], key="tab",
        bind="query-params")
    with search:
        if search.open is not False:
            search_tab(col, index_dir, generation, weights)
    with map_:
        if map_.open:
            map_tab(col, index_dir, generation)
    with clusters:
        if clusters.open:
            clusters_tab(col, index_dir, generation)
    with dups:
        if dups.open:
            duplicates_tab(col, index_dir, generation)
    with odd:
        if odd.open:
            outliers_tab(col, index_dir, generation)
    with about:
        if about.open:
            about_tab(col, index_dir, generation)


try:
    main()
except ImgsimError as exc:  # includes an index changed under the running server (IndexFormatError)
    st.error(say(str(exc)))
except Exception as exc:  # the last line of defence: a message on the page, the traceback in the log
    LOG.exception("unexpected error")  # its text stays there too: it may quote any server path
    st.error(f"Something went wrong ({type(exc).__name__}). The details are in the server log.")
