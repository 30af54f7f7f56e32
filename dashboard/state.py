"""Session-state and URL keys, and the query state machine with the callbacks that change it.

The Search tab answers one query, from one of four sources: an indexed image (a relative path, ``?q=``), an
upload, a description (``?text=``, CLIP indexes) or several images to look like and to avoid (``?q=a&q=b&not=c``).
Queries are paths, not rows: a re-index renumbers rows. Changing the query reruns the whole page, also from a
button inside an ``st.fragment`` (whose own reruns redraw only that section).
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from imgsim.collection import Collection
from imgsim.serving.policy import MAX_EXAMPLES, plain

# --- URL parameters of a shared link: ?q=&not=&k=&t=&ck=&tab=&text=&fusion= -------------------------------------
URL_QUERY = "q"  # the image query; several (with or without URL_NOT) make a more-like-these query
URL_NOT = "not"  # images to avoid
# Widgets bound to the URL (bind="query-params") carry the parameter's name as their key.
K = "k"  # number of results
K_MAX = 50  # the k slider's largest value
K_DEFAULT = 8
THRESHOLD = "t"  # duplicates distance threshold
CLUSTERS_K = "ck"  # number of clusters
TAB = "tab"
TEXT = "text"  # the description (CLIP indexes)
FUSION = "fusion"  # how a description is ranked, in --fusion's spelling (untrusted: dashboard.components.fusion)
WHERE = "where"  # the metadata filter's clauses, one per parameter (untrusted: see dashboard.components.filters)
NEAR = "near"  # a place filter, LAT,LON,KM
MAX_DISTANCE = "maxd"  # the Search tab's largest distance (not in the URL)

# --- session state --------------------------------------------------------------------------------------------
QUERY_PATH = "query_path"  # this session's image query (None: none), else the link's ``q`` once read
QUERY_FROM_LINK = "query_from_link"  # whether QUERY_PATH came from the link
QUERY_ROW = "query_row"  # QUERY_PATH's row in the generation drawn last; derived again on every rerun
MORE_LIKE = "more_like"  # {"q": [path, ...], "not": [path, ...]} or None
MORE_LIKE_CUT = "more_like_cut"  # the note saying that a more-like-these query was cut to MAX_EXAMPLES, or None
TEXT_OVER_QUERY = "text_over_query"  # the image query's path a description replaced (picking another clears it)
UPLOAD_KEY = "upload_key"  # bumped to clear the uploader (its key changes)
ML_KEY = "ml_key"  # bumped to reset the more-like-these picker
WHY = "why"  # the result path whose Why? panel is open
CLUSTER_OPEN = "cluster_open"  # the cluster shown whole, or None
FOLDER_INPUT = "folder_input"  # the folder a visitor typed (only where the operator lets visitors choose)
FOLDER_REFUSED = "_folder_refused"
GALLERY_FILTER = "gallery_filter"
JOBS_SEEN = "_jobs_seen"  # indexing jobs whose outcome this session has been told
JOBS_WATCHED = "_jobs_watched"  # indexing jobs this session started or saw running: only they are news here
PLOTLY_PRELOADED = "plotly_preloaded"
REDACTIONS = "_redactions"  # server path -> name shown (see dashboard.messages)
SEARCH_MAP = "search_map"  # the map components' values: {"clicked": [generation, row], "selection": ...}
FULL_MAP = "full_map"
PLACES_MAP = "places_map"
FILTER = "filter"  # this session's metadata filter: {"where": [clause, ...], "near": text or None}, else the link's
FUSION_LINKED = "fusion_linked"  # a link's fusion weights that are none of the setting's choices: one more
FILTER_KEY = "filter_key"  # bumped to draw the filter bar's widgets afresh from FILTER


def last_click_key(map_key: str) -> str:
    """Where the last click of a map was kept (a component's trigger value stays until the next one)."""
    return f"{map_key}_last_click"


def watch_job(number: int) -> None:
    """This session started indexing job ``number`` or saw it running: its outcome is news to it."""
    st.session_state.setdefault(JOBS_WATCHED, set()).add(number)


def watched_job(number: int) -> bool:
    """Whether this session started indexing job ``number`` or saw it running."""
    return number in st.session_state.get(JOBS_WATCHED, set())


# --- the one-image query ----------------------------------------------------------------------------------------

def _clear_upload() -> None:
    st.session_state[UPLOAD_KEY] = st.session_state.get(UPLOAD_KEY, 0) + 1


def upload_key() -> str:
    """The uploader's key: a new one clears it."""
    return f"upload_{st.session_state.get(UPLOAD_KEY, 0)}"


def set_query_row(col: Collection, row: int) -> None:
    """Make an indexed image the query and rerun the page.

    Also a button callback: its arguments are bound when the button is drawn (the collection as shown), so a
    click still means the image it showed after a re-index has moved that image to another row (the key's).
    """
    _clear_more_like()
    st.session_state[QUERY_PATH] = col.paths[int(row)]  # a path, not a row, so that it survives a re-index
    st.session_state[QUERY_FROM_LINK] = False
    st.query_params[URL_QUERY] = col.paths[int(row)]
    _clear_upload()
    st.session_state[QUERY_ROW] = int(row)  # for this generation only: current_query() derives it again
    st.rerun(scope="app")


def query_path() -> str | None:
    """The query's relative path: this session's choice, else the shared link's ``q`` (read once)."""
    if QUERY_PATH not in st.session_state:
        st.session_state[QUERY_PATH] = st.query_params.get(URL_QUERY) or None
        st.session_state[QUERY_FROM_LINK] = True
    return st.session_state[QUERY_PATH]


def current_query(col: Collection) -> int | None:
    """The query's row in the collection as it is now, or None (no query, or the image is gone)."""
    path = query_path()
    row = col.index.row_of(path) if path else None
    st.session_state[QUERY_ROW] = row  # derived on every rerun, never carried across index generations
    return row


def query_row() -> int | None:
    """The image query's row as last derived (see current_query)."""
    return st.session_state.get(QUERY_ROW)


def query_missing(col: Collection) -> tuple[str, bool] | None:
    """(path, whether it came from the link) when the image query is not (or no longer) in the collection."""
    path = query_path()
    if path and col.index.row_of(path) is None:
        return path, bool(st.session_state.get(QUERY_FROM_LINK))
    return None


def k_from_link() -> str | None:
    """A link's ``?k=`` outside the slider's 1..K_MAX is capped (Streamlit would silently show the default): the
    note saying so (Markdown, the link's value as text), on the run that reads it; else None."""
    if K in st.session_state or K not in st.query_params:
        return None
    raw = st.query_params.get(K)
    try:
        asked = int(float(raw))
    except (TypeError, ValueError, OverflowError):
        return f"The link's k ({plain(raw)}) is not a number of results: showing {K_DEFAULT}."
    if 1 <= asked <= K_MAX and float(raw) == asked:
        return None
    k = min(max(asked, 1), K_MAX)
    st.session_state[K] = k
    return f"The link asks for k = {plain(raw)} results; k is 1 to {K_MAX} here: showing {k}."


# --- a description (CLIP indexes) ----------------------------------------------------------------------------

def text_changed() -> None:
    """Typing a description makes it the query: remember which image query it replaces, clear the upload."""
    st.session_state[TEXT_OVER_QUERY] = query_path()  # a path: a re-index renumbers rows
    _clear_upload()


def drop_text_replaced_by_an_image() -> None:
    """An image was picked since the description was typed: the image is the query (?text= goes with it)."""
    if TEXT_OVER_QUERY in st.session_state and st.session_state[TEXT_OVER_QUERY] != query_path():
        st.session_state[TEXT] = ""
        del st.session_state[TEXT_OVER_QUERY]


def text_entered(text: str | None) -> str | None:
    """The description to search with (spaces collapsed), or None; one from a shared link is remembered too."""
    text = " ".join((text or "").split())
    if text and TEXT_OVER_QUERY not in st.session_state:  # from a shared link
        st.session_state[TEXT_OVER_QUERY] = query_path()
    return text or None


def text_typed() -> str:
    """The description box as typed (before Enter, too)."""
    return st.session_state.get(TEXT, "")


# --- more like these --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Examples:
    """A more-like-these query resolved against the collection: rows to look like and to avoid."""

    positives: list[int]
    negatives: list[int]


def _reset_picker() -> None:
    """The picker's lists start afresh from the query (a widget with an unchanged key keeps what it showed)."""
    st.session_state[ML_KEY] = st.session_state.get(ML_KEY, 0) + 1


def _clear_more_like() -> None:
    st.session_state[MORE_LIKE] = None
    st.session_state[MORE_LIKE_CUT] = None
    _reset_picker()
    if URL_NOT in st.query_params:
        del st.query_params[URL_NOT]


def _examples(positives: list[str], negatives: list[str]) -> tuple[list[str], list[str], str | None]:
    """Each side without repeats, at most MAX_EXAMPLES long, and the note saying what was cut (or None)."""
    positives = list(dict.fromkeys(positives))
    negatives = [p for p in dict.fromkeys(negatives) if p not in set(positives)]
    cut = [f"{len(side):,} images to {what}" for side, what in ((positives, "look like"), (negatives, "avoid"))
           if len(side) > MAX_EXAMPLES]
    note = (f"More like these uses at most {MAX_EXAMPLES} images to look like and {MAX_EXAMPLES} to avoid: of "
            f"{' and '.join(cut)}, the first {MAX_EXAMPLES} are used.") if cut else None
    return positives[:MAX_EXAMPLES], negatives[:MAX_EXAMPLES], note


def examples_cut() -> str | None:
    """The note saying that the more-like-these query was cut to MAX_EXAMPLES images a side, or None."""
    return st.session_state.get(MORE_LIKE_CUT)


def set_more_like(col: Collection, positives: list[str], negatives: list[str]) -> None:
    """Make several images (and images to avoid) the query, relative paths also in the URL; rerun the page."""
    positives, negatives, cut = _examples(positives, negatives)
    if len(positives) == 1 and not negatives:
        row = col.index.row_of(positives[0])
        if row is not None:
            set_query_row(col, row)
            return  # a callback's st.rerun does not stop it
    _reset_picker()
    st.session_state[MORE_LIKE] = {"q": positives, "not": negatives}
    st.session_state[MORE_LIKE_CUT] = cut
    st.session_state[QUERY_ROW] = None
    st.session_state[QUERY_PATH] = None  # the one-image query gives way to these
    st.query_params[URL_QUERY] = positives
    if negatives:
        st.query_params[URL_NOT] = negatives
    elif URL_NOT in st.query_params:
        del st.query_params[URL_NOT]
    _clear_upload()
    st.rerun(scope="app")


def more_like_paths() -> tuple[list[str], list[str]] | None:
    """(paths to look like, paths to avoid) of a more-like-these query, or None; a link with several different
    ``q`` or any ``not`` is read once per session, without repeats and cut to MAX_EXAMPLES a side."""
    if MORE_LIKE not in st.session_state:
        asked = st.query_params.get_all(URL_QUERY), st.query_params.get_all(URL_NOT)
        qs, nots, cut = _examples(*asked)
        st.session_state[MORE_LIKE] = {"q": qs, "not": nots} if len(qs) > 1 or nots else None
        st.session_state[MORE_LIKE_CUT] = cut
        if (qs, nots) != asked:  # the URL says what is used, as the page does
            st.query_params[URL_QUERY] = qs
            if nots:
                st.query_params[URL_NOT] = nots
            elif URL_NOT in st.query_params:
                del st.query_params[URL_NOT]
    chosen = st.session_state.get(MORE_LIKE)
    return (list(chosen["q"]), list(chosen["not"])) if chosen else None


def examples_in(col: Collection, paths: tuple[list[str], list[str]] | None) -> Examples | None:
    """The rows of a more-like-these query that are in the collection (None when no image to look like is)."""
    if not paths:
        return None
    pos = [col.index.row_of(p) for p in paths[0] if col.index.row_of(p) is not None]
    neg = [col.index.row_of(p) for p in paths[1] if col.index.row_of(p) is not None]
    return Examples(pos, neg) if pos else None


def examples_chosen(col: Collection) -> tuple[list[str], list[str]]:
    """The picker's lists: the more-like-these paths that are in the collection."""
    pos, neg = more_like_paths() or ([], [])
    return [p for p in pos if col.index.row_of(p) is not None], [p for p in neg if col.index.row_of(p) is not None]


def current_positives(col: Collection, query: int | None) -> tuple[list[str], list[str]]:
    """The examples a thumbs-up/down adds to: the current more-like-these query, else the one image."""
    chosen = st.session_state.get(MORE_LIKE)
    if chosen:
        return list(chosen["q"]), list(chosen["not"])
    return ([col.paths[query]] if query is not None else []), []


def picker_key(side: str) -> str:
    """The key of the picker's ``pos`` or ``neg`` list: a new one starts it afresh."""
    return f"ml_{side}_{st.session_state.get(ML_KEY, 0)}"


def search_with_selection(col: Collection, positives: list[str]) -> None:
    """A button callback: a map selection becomes the query, and the Search tab, which shows its answer, opens."""
    st.session_state[TAB] = "Search"
    set_more_like(col, positives, [])


# --- which query the Search tab answers -----------------------------------------------------------------------

UPLOAD, DESCRIPTION, EXAMPLES, IMAGE = "upload", "description", "examples", "image"


@dataclass(frozen=True)
class Query:
    """What the visitor has given the Search tab: an upload beats a description, which beats more-like-these
    examples, which beat the image query (a path; with none, the first view answers an example)."""

    upload: UploadedFile | None
    text: str | None
    examples: Examples | None

    @property
    def source(self) -> str:
        """UPLOAD, DESCRIPTION, EXAMPLES or IMAGE: the one answered."""
        if self.upload is not None:
            return UPLOAD
        if self.text is not None:
            return DESCRIPTION
        return EXAMPLES if self.examples is not None else IMAGE

    def show_in_url(self) -> None:
        """The link names the query answered: none for an upload (which a link cannot carry), else the image
        or images chosen, back again once the upload is removed."""
        if self.source == UPLOAD:
            for key in (URL_QUERY, URL_NOT):
                if key in st.query_params:
                    del st.query_params[key]
        elif URL_QUERY not in st.query_params:
            chosen = st.session_state.get(MORE_LIKE)
            if self.source == EXAMPLES and chosen:
                st.query_params[URL_QUERY] = chosen["q"]
                if chosen["not"]:
                    st.query_params[URL_NOT] = chosen["not"]
            elif self.source == IMAGE and st.session_state.get(QUERY_PATH):
                st.query_params[URL_QUERY] = st.session_state[QUERY_PATH]

    def wants_first_view(self, supports_text: bool) -> bool:
        """Nothing chosen yet (not even text typed): the first view is already answered."""
        return (self.source == IMAGE and not (supports_text and text_typed()) and query_path() is None)


# --- sections that rerun alone: Why?, an opened cluster --------------------------------------------------------

def show_why(path: str) -> None:
    """Open the Why? panel of a result (a path: the panel outlives a re-index that keeps it)."""
    st.session_state[WHY] = path


def close_why() -> None:
    """Close the Why? panel."""
    st.session_state[WHY] = None


def why_path() -> str | None:
    """The result whose Why? panel is open, or None."""
    return st.session_state.get(WHY)


def open_cluster(cluster: int | None) -> None:
    """Show one cluster whole (None: back to all clusters)."""
    st.session_state[CLUSTER_OPEN] = cluster


def opened_cluster() -> int | None:
    """The cluster shown whole, or None."""
    return st.session_state.get(CLUSTER_OPEN)


def first_plotly_load() -> bool:
    """True once per session: the first page starts loading Plotly.js early; later reruns keep the map mounted."""
    if st.session_state.get(PLOTLY_PRELOADED):
        return False
    st.session_state[PLOTLY_PRELOADED] = True
    return True
