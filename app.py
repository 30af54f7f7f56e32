"""imgsim dashboard: pick or upload an image, see what looks like it, explore the collection's map.

Layout, widgets and cache wrappers only; every behaviour lives in the ``imgsim`` package.
Run with ``streamlit run app.py``. Settings: IMGSIM_IMAGES, IMGSIM_INDEX, IMGSIM_WEIGHTS (see README).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import time
from pathlib import Path

import plotly
import plotly.graph_objects as go
import streamlit as st

from imgsim import charts, decode, export, mapview
from imgsim import progress as prog
from imgsim.backbone import BackboneSpec, make_backbone
from imgsim.collection import Collection, QueryResult, check_compatible, default_index_dir
from imgsim.errors import ImgsimError
from imgsim.extract import FeatureExtractor, WeightsError, how_to_supply_weights, weights_spec
from imgsim.index import CURRENT, index_exists

APP_DIR = Path(__file__).resolve().parent
DEMO_DIR = APP_DIR / "data" / "demo"
UPLOAD_TYPES = ["jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff"]
GALLERY_PAGE = 24
LOG = logging.getLogger("imgsim.app")

st.set_page_config(page_title="imgsim · what looks like this?", page_icon="🔎", layout="wide")


# --- cache wrappers: heavy things load once per process -------------------------------------------------

@st.cache_resource(show_spinner=False)
def open_collection(index_dir: str, generation: str) -> Collection:
    """The index and its search structures; ``generation`` makes a re-index load the new one."""
    return Collection.open(index_dir)


@st.cache_resource(show_spinner="Loading ResNet50…")
def get_extractor(weights: str, pooling: str) -> FeatureExtractor:
    """The model, built once per process and only when an upload or indexing needs it."""
    return FeatureExtractor(weights, pooling)


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
    prefix = hashlib.sha1(index_dir.encode()).hexdigest()[:12]
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


@st.cache_data(show_spinner=False)
def map_base_json(index_dir: str, generation: str, height: int) -> str:
    """The collection's scatter as Plotly JSON, built once per index generation (queries only add overlays)."""
    col = open_collection(index_dir, generation)
    rows = mapview.drawn_rows(col.count)
    density = mapview.density(col.map_xy()) if len(rows) < col.count else None
    return charts.map_base(col.map_xy(), col.labels, col.paths, height=height, native_hover=False, rows=rows,
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

def settings() -> tuple[Path, Path, str, bool]:
    """(folder, index dir, weights, from environment or default) for this session."""
    weights = os.environ.get("IMGSIM_WEIGHTS") or "imagenet"
    typed = st.session_state.get("folder_input", "").strip()
    env_index = os.environ.get("IMGSIM_INDEX")
    if typed:
        folder = Path(typed).expanduser()
        return folder, default_index_dir(folder, weights), weights, False
    env_images = os.environ.get("IMGSIM_IMAGES")
    if env_index and not env_images and index_exists(env_index):
        col = Collection.open(env_index)
        return col.index.root, Path(env_index), weights, True
    folder = Path(env_images).expanduser() if env_images else DEMO_DIR
    index_dir = Path(env_index).expanduser() if env_index else default_index_dir(folder, weights)
    return folder, index_dir, weights, True


def generation_of(index_dir: Path) -> str:
    return (index_dir / CURRENT).read_text(encoding="utf-8").strip()


# --- indexing ---------------------------------------------------------------------------------------------

def run_indexing(folder: Path, index_dir: Path, weights: str) -> None:
    """Index (or update) a folder with a progress bar showing count, images/s and time left."""
    bar = st.progress(0.0, text="Starting…")
    started: dict[str, float] = {}

    def report(stage: str, done: int, total: int | None) -> None:
        started.setdefault(stage, time.perf_counter())
        bar.progress(prog.fraction(done, total), text=prog.describe(stage, done, total,
                                                                    time.perf_counter() - started[stage]))

    def factory(spec, pooling, batch_size):
        return get_extractor(spec.spec, pooling)

    from imgsim.build import build_index  # indexing only: opening an existing index never imports it

    try:
        report_ = build_index(folder, index_dir, weights=weights if not index_exists(index_dir) else None,
                              progress=report, extractor_factory=factory)
    finally:
        bar.empty()  # a failed run must not leave "Loading ResNet50…" on the page above its error
    if report_.committed:
        st.toast(f"Indexed {report_.indexed} images ({report_.extracted} extracted"
                 + (f" at {report_.images_per_second:.1f} images/s" if report_.extracted else "") + ")")


def weights_help(error: Exception) -> None:
    st.error("**The model's weights cannot be loaded.** " + str(error).split("\n", 1)[0])
    how = getattr(error, "how_to", None)  # CLIP errors carry their own instructions
    st.markdown("**How to supply them**\n\n" + (how(markdown=True) if how else how_to_supply_weights(markdown=True)))


# --- query state ------------------------------------------------------------------------------------------

def set_query_row(col: Collection, row: int) -> None:
    st.session_state["query_row"] = int(row)
    st.query_params["q"] = col.paths[int(row)]
    st.session_state["upload_key"] = st.session_state.get("upload_key", 0) + 1  # clears the uploader


def current_query(col: Collection) -> int | None:
    row = st.session_state.get("query_row")
    if "query_row" not in st.session_state and "q" in st.query_params:  # a shared link, read once per session
        row = col.index.row_of(st.query_params["q"])
        if row is None:
            st.warning(f"The image in the link ({st.query_params['q']}) is not in this collection.")
        st.session_state["query_row"] = row
    return row if row is not None and 0 <= row < col.count else None


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
    rows = [r for r, p in enumerate(col.paths) if needle in p.lower()]
    if not rows:
        st.info(f"No file name contains “{needle}”.")
        return
    pages = (len(rows) + GALLERY_PAGE - 1) // GALLERY_PAGE
    page = st.number_input(f"Page (of {pages})", 1, pages, 1, key="gallery_page") if pages > 1 else 1
    shown = rows[(page - 1) * GALLERY_PAGE: page * GALLERY_PAGE]
    st.caption(f"{len(rows)} image(s)" + (f" matching “{needle}”" if needle else ""))
    for start in range(0, len(shown), 8):
        cols = st.columns(8)
        for c, row in zip(cols, shown[start:start + 8]):
            with c:
                st.image(thumb(col, row, 160, square="pad") or _placeholder(), width="stretch")
                if st.button(_short(col.paths[row].rsplit("/", 1)[-1], 18), key=f"pick_{row}", width="stretch",
                             help=f"Search with {col.paths[row]}", type="tertiary"):
                    set_query_row(col, row)
                    st.rerun()


def _short(name: str, limit: int = 16) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


@st.cache_data(show_spinner=False)
def _placeholder() -> bytes:
    from PIL import Image

    return _jpeg(Image.new("RGB", (160, 120), (235, 238, 242)))


def results_grid(col: Collection, result: QueryResult, key: str) -> None:
    per_row = 4
    for start in range(0, len(result.neighbors), per_row):
        cols = st.columns(per_row)
        for c, n in zip(cols, result.neighbors[start:start + per_row]):
            with c, st.container(border=True):
                st.image(thumb(col, n.row, 256, square="pad") or _placeholder(), width="stretch")
                st.markdown(f":small[**#{n.rank}** · distance **{n.distance:.3f}** · cos {n.similarity:.3f}]")
                st.caption(_short(n.path, 34))
                if result.row != n.row and st.button("Similar", key=f"{key}_{n.row}", width="stretch",
                                                     icon=":material/search:", help=f"Search with {n.path}"):
                    set_query_row(col, n.row)
                    st.rerun()


def draw_map(col: Collection, index_dir: Path, generation: str, key: str, height: int,
             query: int | None, neighbours: list[int]) -> list[int]:
    """The interactive map; a click makes that image the query. Returns the lasso/box selection."""
    overlay = charts.map_overlay(col.map_xy(), col.paths, query, neighbours, native_hover=False)
    result = map_component()(key=key, data={"base": map_base_json(str(index_dir), generation, height),
                                            "overlay": go.Figure(data=overlay).to_json(),
                                            "paths": col.paths if col.count <= mapview.MAP_POINTS else [],
                                            "points": int(min(col.count, mapview.MAP_POINTS)), "height": height,
                                            "sprite": hover_sprite(str(index_dir), generation)},
                             default={"selection": []}, height=height + 10,
                             on_clicked_change=lambda: None, on_selection_change=lambda: None)
    clicked = result.clicked
    if clicked is not None and clicked != st.session_state.get(f"{key}_last_click"):
        st.session_state[f"{key}_last_click"] = clicked
        if 0 <= int(clicked) < col.count and int(clicked) != st.session_state.get("query_row"):
            set_query_row(col, int(clicked))
            st.rerun()
    return [int(r) for r in (result.selection or []) if 0 <= int(r) < col.count]


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
                         help=f"Search by text with this index's {col.backbone.spec} model; press Enter.")
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
    with st.expander("Pick an image from the collection", expanded=upload is None and text is None and current_query(col) is None):
        gallery(col)
    left, right = st.columns([3, 2], gap="large")
    with left:
        result, query_caption, query_data = None, "", None
        if text is not None and upload is None:
            try:
                embedded = embed_text(str(index_dir), generation, text)
                result = col.neighbors_of_vector(embedded.vector, k)
                query_caption = f"text: “{embedded.text}”"
                if embedded.truncated:
                    st.info(embedded.note)
            except WeightsError as exc:
                weights_help(exc)
            except ImgsimError as exc:
                st.error(str(exc))
        elif upload is not None:
            data = upload.getvalue()  # in memory only: never written to disk under its name
            try:
                result = col.query_embedded(embed_upload(str(index_dir), generation, data), k)
                query_caption, query_data = f"uploaded: {upload.name}", upload_thumb(data)
            except decode.DecodeError as exc:
                st.error(f"That upload cannot be used: {exc}.")
            except WeightsError as exc:
                weights_help(exc)
        else:
            row = current_query(col)
            if row is not None:
                result = col.neighbors_of_row(row, k)
                query_caption, query_data = f"query: {col.paths[row]}", thumb(col, row, 256)
        if result is None:
            st.info(("Describe what you are looking for, pick" if col.supports_text else "Pick")
                    + " an image above, upload one, or click a point on the map.")
        else:
            q1, q2 = st.columns([1, 3])
            with q1:
                if query_caption.startswith("text: "):
                    st.markdown(f"**Described:**  \n{query_caption[6:]}")
                else:
                    show_image(query_data, query_caption)
            with q2:
                st.markdown(f"**{len(result.neighbors)} nearest images** (k = {result.k}"
                            + (f", clamped from {k}" if result.k < k else "") + ").")
                st.caption("Distance: Euclidean between unit feature vectors (0 = identical, 2 = opposite). "
                           "cos: cosine similarity.")
            results_grid(col, result, key="more")
    with right:
        st.markdown("**Map of the collection** · hover for a preview, click a point to search with it")
        query_row = result.row if result is not None else None
        neighbours = [n.row for n in result.neighbors if n.row != query_row] if result is not None else []
        draw_map(col, index_dir, generation, "search_map", 560, query_row, neighbours)


@st.cache_data(show_spinner="Embedding the upload…", max_entries=32)
def embed_upload(index_dir: str, generation: str, data: bytes):
    """An upload's vector (or its row, when it is an indexed file), computed once, not on every rerun."""
    col = open_collection(index_dir, generation)
    return col.embed_bytes(data, extractor=lambda: upload_model(col))


@st.cache_data(show_spinner=False, max_entries=32)
def upload_thumb(data: bytes) -> bytes:
    return _jpeg(decode.thumbnail(data, 256))


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
    model = get_extractor(weights_spec(col.index.weights), col.index.pooling)
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
    query = st.session_state.get("query_row")
    selection = draw_map(col, index_dir, generation, "full_map", 700, query, [])
    if selection:
        st.markdown(f"**{len(selection)} selected image(s)**")
        st.download_button("Download selection as CSV", export.selection_csv(col.paths, col.labels, col.map_xy(),
                                                                              selection),
                           file_name="imgsim-selection.csv", mime="text/csv", on_click="ignore")
        for start in range(0, min(len(selection), 48), 8):
            cols = st.columns(8)
            for c, row in zip(cols, selection[start:start + 8]):
                with c:
                    show_image(thumb(col, row, 160, square="pad"), col.paths[row])
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
            st.download_button("Download groups as CSV", export.groups_csv(col.paths, groups, threshold),
                               file_name="imgsim-duplicates.csv", mime="text/csv", on_click="ignore")
    with right:
        st.plotly_chart(charts.distance_histogram(nearest, threshold), width="stretch", key="dup_hist")
    for number, g in enumerate(groups[:40], start=1):
        st.markdown(f"**Group {number}** · {len(g.rows)} images")
        cols = st.columns(min(8, max(len(g.rows), 4)))
        for c, row, d in zip(cols, g.rows[:8], g.nearest[:8]):
            with c:
                show_image(thumb(col, row, 160, square="pad"), f"{col.paths[row]} · nearest {d:.3f}")
        if len(g.rows) > 8:
            st.caption(f"… and {len(g.rows) - 8} more in the CSV.")
    if len(groups) > 40:
        st.caption(f"Showing 40 of {len(groups)} groups; the CSV has all of them.")


def about_tab(col: Collection, index_dir: Path, generation: str) -> None:
    meta = col.index.meta
    st.markdown(f"**{col.count} images** from `{col.index.root}` · index `{index_dir}` · "
                f"model {meta['backbone']}" + (f" (preset `{meta['preset']}`)" if meta.get("preset") else "")
                + f" ({col.index.pooling}, {col.index.dims:,} values per image) · "
                f"weights: {col.weights_label} · updated {meta['updated']}")
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
        st.caption(f"Same numbers as `python -m imgsim evaluate {index_dir} -k {ev.k}`.")
    if col.index.skipped:
        st.subheader(f"Skipped files ({len(col.index.skipped)})")
        st.dataframe([{"file": s.path, "reason": s.reason.value, "detail": s.detail} for s in col.index.skipped],
                     hide_index=True, width="stretch")


# --- page -------------------------------------------------------------------------------------------------

def sidebar(folder: Path, index_dir: Path, weights: str, col: Collection | None) -> bool:
    """Collection settings; returns True when the user asked to (re)index."""
    with st.sidebar:
        st.header("Collection")
        st.text_input("Image folder", key="folder_input", placeholder=str(folder),
                      help="Any folder of images; sub-folders become colours on the map and labels for the check.")
        st.caption(f"Folder: `{folder}`  \nIndex: `{index_dir}`  \nWeights for new indexes: `{weights}`")
        if col is not None:
            st.markdown(f"**{col.count}** images · {len(col.index.skipped)} skipped · pooling `{col.index.pooling}`")
            if col.is_random:
                st.badge("random weights", color="orange", icon=":material/warning:")
        return st.button("Update index" if col is not None else "Index this folder", width="stretch",
                         help="Extracts only new or changed images; deleted ones are dropped.")


def main() -> None:
    st.title("imgsim")
    st.caption("What looks like this? ResNet50 features, exact nearest neighbours and a t-SNE map of your images.")
    folder, index_dir, weights, automatic = settings()
    exists = index_exists(index_dir)
    col = open_collection(str(index_dir), generation_of(index_dir)) if exists else None
    wants_index = sidebar(folder, index_dir, weights, col)
    if not folder.is_dir():
        st.error(f"Image folder not found: {folder}. Type an existing folder in the sidebar.")
        return
    if (not exists and automatic) or wants_index:
        try:
            run_indexing(folder, index_dir, weights)
        except WeightsError as exc:
            weights_help(exc)
            if not exists:
                return
        exists = index_exists(index_dir)
        if exists:
            col = open_collection(str(index_dir), generation_of(index_dir))
    if not exists:
        st.info(f"`{folder}` has no index yet. Press **Index this folder** in the sidebar.")
        return
    generation = generation_of(index_dir)
    if col.is_random:
        st.warning("**Random weights.** This index was built with seeded random weights (IMGSIM_WEIGHTS=random): "
                   "everything runs, but the similarities are not meaningful. See the README to use ImageNet "
                   "weights.", icon=":material/warning:")
    if col.count == 0:
        st.info(f"No usable images in `{folder}`: {len(col.index.skipped)} skipped, "
                f"{col.index.meta.get('ignored', 0)} other files ignored.")
        for s in col.index.skipped[:50]:
            st.caption(f"{s.path}: {s.reason.value}")
        return
    search, map_, dups, about = st.tabs(["Search", "Map", "Duplicates", "About this collection"], key="tab",
                                        bind="query-params")
    with search:
        if search.open is not False:
            search_tab(col, index_dir, generation, weights)
    with map_:
        if map_.open:
            map_tab(col, index_dir, generation)
    with dups:
        if dups.open:
            duplicates_tab(col, index_dir, generation)
    with about:
        if about.open:
            about_tab(col, index_dir, generation)


try:
    main()
except ImgsimError as exc:
    st.error(str(exc))
except Exception as exc:  # the last line of defence: a message on the page, the traceback in the log
    LOG.exception("unexpected error")
    st.error(f"Something went wrong ({type(exc).__name__}: {exc}). The details are in the server log.")
