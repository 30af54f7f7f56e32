"""imgsim dashboard: pick or upload an image, see what looks like it, explore the collection's map.

The frame only: page config, login gate, settings, sidebar, tabs and the error boundary; each tab is a view
in ``dashboard/views/`` and every behaviour lives in the ``imgsim`` package. Run with ``streamlit run app.py``.
Settings: IMGSIM_IMAGES, IMGSIM_INDEX, IMGSIM_WEIGHTS, and for a shared server IMGSIM_ROOTS and
IMGSIM_ALLOW_INDEXING (see README, "Running it for other people").
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import streamlit as st

from dashboard import cached, indexing, messages, state
from dashboard.messages import weights_name
from dashboard.settings import Settings, folder_refused, policy, settings
from dashboard.views import about, clusters, duplicates, outliers, places, search
from dashboard.views import map as map_view
from imgsim.collection import Collection
from imgsim.models.weights import weights_spec
from imgsim.serving import policy as serving
from imgsim.serving.policy import plain
from imgsim.store.generations import index_exists

st.set_page_config(page_title="imgsim · what looks like this?", page_icon="🔎", layout="wide")

TABS = {"Search": search, "Map": map_view, "Places": places, "Clusters": clusters, "Duplicates": duplicates,
        "Odd ones out": outliers, "About this collection": about}


def login_gate() -> bool:
    """With IMGSIM_REQUIRE_LOGIN=1, only visitors signed in through Streamlit's OIDC login (st.login, configured
    in .streamlit/secrets.toml [auth]) see the collection; True when the page may go on."""
    if (os.environ.get("IMGSIM_REQUIRE_LOGIN") or "").strip().lower() not in ("1", "true", "yes", "on"):
        return True
    if importlib.util.find_spec("authlib") is None:  # st.login's button would fail in Streamlit's own error box
        st.error("This collection is private, and signing in needs Authlib, which is not installed on this server. "
                 "Its operator can install it with `pip install Authlib` and restart the app.")
        return False
    if st.user.get("is_logged_in", False):  # the attribute exists only once [auth] is configured
        with st.sidebar:
            st.caption(f"Signed in as {plain(str(st.user.get('email') or st.user.get('name') or 'you'))}")
            st.button("Log out", on_click=st.logout)
        return True
    st.info("This collection is private. Sign in to see it.")
    st.button("Log in", on_click=st.login, type="primary")
    return False


def sidebar(pol: serving.Policy, s: Settings, col: Collection | None) -> bool:
    """Collection settings; returns True when the user asked to (re)index (only where the operator allows it)."""
    with st.sidebar:
        st.header("Collection")
        if pol.can_choose:
            st.text_input("Image folder", key=state.FOLDER_INPUT, placeholder=pol.display_name(s.folder),
                          help="A folder under " + ", ".join(plain(r.name) for r in pol.roots)
                               + "; sub-folders become colours on the map and labels for the check.")
            if folder_refused():
                st.error(serving.REFUSED)
        # An index keeps its own weights (Update index too): the setting only says what a new index gets.
        weights = (f"Weights: {weights_name(weights_spec(col.index.weights))}" if col is not None
                   else f"Weights for new indexes: {weights_name(s.weights)}")
        st.caption(f"Collection: {plain(pol.display_name(s.folder))}  \n{weights}")
        if col is not None:
            st.markdown(f"**{col.count}** images · {len(col.index.skipped)} skipped · pooling `{col.index.pooling}`")
            if col.is_random:
                st.badge("random weights", color="orange", icon=":material/warning:")
        if not pol.allow_indexing:
            return False
        return st.button("Update index" if col is not None else "Index this folder", width="stretch",
                         help="Extracts only new or changed images; deleted ones are dropped.")


def query_notice(col: Collection) -> None:
    """Say so when the query's path is not (or no longer) in the collection."""
    missing = state.query_missing(col)
    if missing is None:
        return
    path, from_link = missing
    if from_link:
        st.warning(f"The image in the link ({plain(path)}) is not in this collection.")
    else:
        st.warning(f"The query image {plain(path)} is no longer in this collection (the index was updated "
                   "and it was removed or renamed). Pick another image.")


def main() -> None:
    """One run of the page: the collection this session shows, then its tabs."""
    st.title("imgsim")
    st.caption("What looks like this? Nearest neighbours by ResNet50, EfficientNet-Lite0 or CLIP features, and a t-SNE map of your images.")
    cached.preview_folder()  # first run of this process: previews left in static/cache/ by ended servers are removed
    if not login_gate():
        return
    pol = policy()
    s = settings(pol)
    name = pol.display_name(s.folder)
    messages.set_redactions(s.folder, s.index_dir, name, s.weights)
    col = cached.current_collection(s.index_dir) if index_exists(s.index_dir) else None
    if col is not None:  # an index built from another folder names it in its refusal: a server path too
        messages.redact(str(col.index.root), "(the folder this index was built from)", replace=False)
    wants_index = sidebar(pol, s, col)
    if not s.folder.is_dir():
        st.error(f"The collection's image folder ({plain(name)}) is not available on this server.")
        return
    col = indexing.ready_collection(s, col, wants_index, name, pol.allow_indexing)
    if col is None:
        return
    generation = cached.generation_of(s.index_dir)
    messages.redact_weights(weights_spec(col.index.weights))  # an upload loads these
    if col.backbone.preset and os.sep in col.backbone.preset:  # a local CLIP preset: the index records its path
        messages.redact(col.backbone.preset, Path(col.backbone.preset).name)
    if col.is_random:
        st.warning("**Random weights.** This index was built with seeded random weights (IMGSIM_WEIGHTS=random): "
                   "everything runs, but the similarities are not meaningful. See the README to use ImageNet "
                   "weights.", icon=":material/warning:")
    if col.count == 0:
        st.info(f"No usable images in {serving.code(name)}: {len(col.index.skipped)} skipped, "
                f"{col.index.meta.get('ignored', 0)} other files ignored.")
        for skipped in col.index.skipped[:50]:
            st.caption(f"{plain(skipped.path)}: {skipped.reason.value}")
        return
    query_notice(col)
    shown = {name: view for name, view in TABS.items() if view is not places or places.available(col)}
    asked = st.query_params.get(state.TAB)
    if asked and asked not in shown:  # Streamlit would drop it without a word
        st.info(f"The link's tab ({plain(asked)}) is not one of this page's tabs: {', '.join(shown)}.")
    tabs = st.tabs(list(shown), key=state.TAB, bind="query-params")
    for tab, view in zip(tabs, shown.values()):
        with tab:
            # Only the open tab is drawn; the first one also while the browser has not said which is open.
            if tab.open or (view is search and tab.open is not False):
                view.render(col, s.index_dir, generation)


with messages.shown_errors():
    main()
