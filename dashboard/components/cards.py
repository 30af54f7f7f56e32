"""Result cards: rank, distance and cosine on a line each, what is known of the photo (date, camera, caption),
then Similar, Why? and more/less like this."""

from __future__ import annotations

import streamlit as st

from dashboard import state
from dashboard.components.thumbs import image_or_placeholder, in_rows, thumb
from dashboard.paths import static_text
from imgsim.collection import Collection, QueryResult
from imgsim.serving.policy import plain

#: Three to a row: at 1280 px with the sidebar open, four leave too little room for 'distance 0.123'.
PER_ROW = 3
#: The text fields a card quotes as the photo's caption, the first one it has.
CAPTION_FIELDS = ("caption", "description", "title")
CAPTION_CHARS = 90


def short(name: str, limit: int = 16) -> str:
    """A name cut to ``limit`` characters with an ellipsis."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


def details(meta: dict) -> str | None:
    """A card's line of what is known about its photo: the day it was taken, the camera, the caption (as text:
    the values come from the files and the sidecar); None when nothing is."""
    caption = next((meta[f] for f in CAPTION_FIELDS if isinstance(meta.get(f), str) and meta[f].strip()), None)
    parts = [str(meta["taken"])[:10] if meta.get("taken") else None, meta.get("camera"),
             short(" ".join(caption.split()), CAPTION_CHARS) if caption else None]
    parts = [plain(str(p)) for p in parts if p]
    return " · ".join(parts) or None


def sources(scores: dict, ranked: set[str] = frozenset({"vector", "keywords"})) -> str:
    """Where a fused result's rank came from: its rank in each of the ``ranked`` rankings (and BM25's score), or
    none; a ranking that was not asked (a weight of 0) is not named."""
    vector, words = scores.get("vector"), scores.get("keywords")
    parts = []
    if "vector" in ranked:
        parts.append(f"vector #{vector.rank}" if vector else "vector —")
    if "keywords" in ranked:
        parts.append(f"keywords #{words.rank} ({words.score:.2f})" if words else "keywords —")
    return " · ".join(parts)


def results_grid(col: Collection, result: QueryResult, key: str, can_explain: bool = False) -> None:
    """One card per neighbour; Similar makes it the query, Why? opens its explanation (``can_explain``)."""
    st.html(f"<style>{static_text('imgsim_cards.css')}</style>")  # each figure stays on its line
    known = dict(zip((n.row for n in result.neighbors), col.metadata_of([n.row for n in result.neighbors])))
    # The rankings that took part: "the words only" asks no vector ranking, so no card says "vector —".
    ranked = {side for n in result.neighbors for side in (n.scores or {})}

    def card(n) -> None:
        with st.container(border=True, key=f"card_{key}_{n.row}"):
            image_or_placeholder(thumb(col, n.row, 256, square="pad"))
            if n.distance is None:  # a keyword result of an image-only index: BM25 is all it has
                st.markdown(f":small[**#{n.rank}**]  \n:small[BM25 **{n.scores['keywords'].score:.2f}**]")
            else:
                st.markdown(f":small[**#{n.rank}**]  \n:small[distance **{n.distance:.3f}**]  \n"
                            f":small[cos {n.similarity:.3f}]")
            if n.distance is not None and n.scores:
                st.markdown(":small[" + sources(n.scores, ranked) + "]")
            st.caption(plain(short(n.path, 34)))
            line = details(known[n.row])
            if line:
                st.caption(line)
            if result.row != n.row:
                st.button("Similar", key=f"{key}_{n.row}", width="stretch", help=f"Search with {plain(n.path)}",
                          on_click=state.set_query_row, args=(col, n.row))
            card_actions(col, result, n.row, key, can_explain)

    in_rows(result.neighbors, card, per_row=PER_ROW)


def card_actions(col: Collection, result: QueryResult, row: int, key: str, can_explain: bool) -> None:
    """Why? (a per-cell explanation) and more/less like this, under one result."""
    path = col.paths[row]
    pos, neg = state.current_positives(col, result.row)
    # Callbacks with the paths bound now (see state.set_query_row): the keys are rows, which a re-index moves.
    with st.container(horizontal=True, gap=None, key=f"actions_{key}_{row}"):
        if can_explain and result.row != row:
            st.button("Why?", key=f"{key}_why_{row}", type="tertiary",
                      help="Which parts of the two images make them similar", on_click=state.show_why, args=(path,))
        # Labelled, not icon-only: a screen reader reads the label (help= is only a tooltip).
        st.button("More", key=f"{key}_pos_{row}", icon=":material/thumb_up:", type="tertiary",
                  help=f"More like this: add {plain(path)} to the query",
                  on_click=state.set_more_like, args=(col, pos + [path], [p for p in neg if p != path]))
        st.button("Less", key=f"{key}_neg_{row}", icon=":material/thumb_down:", type="tertiary",
                  help=f"Less like this: results should not look like {plain(path)}",
                  on_click=state.set_more_like if pos else None,
                  args=(col, [p for p in pos if p != path] or pos, neg + [path]))
