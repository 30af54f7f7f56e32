"""The Search tab: give an image (pick, upload, click the map), a description or several images; see its nearest."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import streamlit as st

from dashboard import cached, state
from dashboard.components.cards import results_grid
from dashboard.components.filters import Active, filter_bar
from dashboard.components.fusion import applies, chosen_weights, from_link, fusion_setting, ranking, weights_shown
from dashboard.components.gallery import gallery
from dashboard.components.map import draw_map, preload_plotly
from dashboard.components.picker import more_like_picker
from dashboard.components.thumbs import image_or_placeholder, thumb
from dashboard.fragments import section
from dashboard.messages import model_shown, say, weights_help
from dashboard.paths import DEMO_DIR, DEMO_EXAMPLE
from imgsim import decode
from imgsim.analysis.explain import heat_overlay, matched_cells
from imgsim.collection import Collection, QueryResult
from imgsim.errors import ImgsimError
from imgsim.metadata.filters import Filter
from imgsim.metadata.fusion import RRF_K
from imgsim.models.base import text_search_help
from imgsim.models.weights import WeightsError
from imgsim.serving.policy import plain

UPLOAD_TYPES = ["jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff"]


@dataclass(frozen=True)
class Answer:
    """A query's neighbours and how the query is shown above them."""

    result: QueryResult
    caption: str  # the query's name ("query: a.jpg", "uploaded: b.jpg", "more like: …")
    image: bytes | None = None  # its thumbnail
    described: str | None = None  # a description, shown as text instead of an image
    source: int | bytes | None = None  # what Why? compares the results with: a row or the upload's bytes
    in_link: bool = True  # whether the page's link names the query (an upload cannot be shared)
    #: How a text query ranked: "keywords" (BM25 alone, an image-only index: no distances); on a CLIP index with
    #: words, "fused" (CLIP and BM25), "vector" (CLIP alone) or "words" (BM25 alone); else None.
    ranked_by: str | None = None
    weights: dict[str, float] | None = None  # the fusion weights of a "fused" ranking


def render(col: Collection, index_dir: Path, generation: str) -> None:
    """The query, its results and the map with them."""
    text = text_box(col) if takes_text(col) else None
    link_notes(col)
    applied = filter_bar(col)
    top_left, top_right = st.columns([1, 1], gap="large")
    with top_left:
        upload = st.file_uploader("Upload an image to search with", type=UPLOAD_TYPES, key=state.upload_key())
    with top_right:
        k = st.slider("Number of results (k)", 1, state.K_MAX, state.K_DEFAULT, key=state.K, bind="query-params")
        farthest = st.slider("Largest distance", 0.0, 2.0, 2.0, 0.01, key=state.MAX_DISTANCE,
                             help="Leave out results farther than this (2: the largest a distance can be, no limit).")
    query = state.Query(upload, text, examples(col))
    query.show_in_url()
    example_row = first_view_row(col) if query.wants_first_view(takes_text(col)) else None
    with st.expander("Pick an image from the collection", expanded=query.source == state.IMAGE
                     and state.current_query(col) is None and example_row is None):
        gallery(index_dir, generation, applied.where)
    more_like_picker(col, query.examples)
    left, right = st.columns([3, 2], gap="large")
    with right:
        st.markdown("**Map of the collection** · hover for a preview, click a point to search with it")
        map_slot = st.empty()
        if state.first_plotly_load():
            with map_slot:  # the browser starts loading Plotly now, while the server finds the results
                preload_plotly()
    with left:
        answer = ANSWERS[query.source](col, index_dir, generation, k, query, example_row, applied.where)
        searched = answer.result.k if answer is not None else 0
        if answer is not None and farthest < 2.0 and answer.ranked_by != "keywords":  # BM25 has no distances
            answer = dataclasses.replace(answer, result=answer.result.within(farthest))
        prompt = (("Describe what you are looking for, pick" if col.supports_text else
                   "Search the captions and keywords, pick" if col.has_text_metadata else "Pick")
                  + " an image above, upload one, or click a point on the map.")
        if example_row is not None and answer is not None:
            st.info(f"An example to start with: the images nearest to {plain(col.paths[example_row])}. " + prompt,
                    icon=":material/lightbulb:")
        if answer is None:
            st.info(prompt)
        elif applied.where is not None and not applied.passing:
            st.info(f"No image matches the filter ({applied.summary}): change it above.")
        else:
            answer_header(col, answer, k, applied, farthest, searched)
            results(index_dir, generation, answer.result, answer.source)
    with map_slot:
        query_row = answer.result.row if answer is not None else None
        shown = [n for n in answer.result.neighbors if n.row != query_row] if answer is not None else []
        stars = query.examples.positives if query.source == state.EXAMPLES else query_row
        draw_map(col, index_dir, generation, state.SEARCH_MAP, 560, stars, [n.row for n in shown],
                 ranks=[n.rank for n in shown], allowed=applied.mask)


def link_notes(col: Collection) -> None:
    """Say what a link asked for that this page cannot do (as text: the values are the visitor's)."""
    note = state.k_from_link()
    if note:
        st.info(note)
    text = st.query_params.get(state.TEXT)
    if text and not takes_text(col):  # the CLI's explanation, the folder by its visitor name
        st.warning(f"The link asks to search for “{plain(text, 200)}”, but this index cannot search by text. "
                   + say(text_search_help(col.backbone.spec, src_dir=str(col.index.root))))


def takes_text(col: Collection) -> bool:
    """Whether a text query can be answered: by CLIP (fused with the images' words when they have some), or by
    BM25 over the images' words alone (`query --text` answers the same)."""
    return col.supports_text or col.has_text_metadata


def text_box(col: Collection) -> str | None:
    """The description (or words) to search with, or None; picking an image afterwards clears it (and ?text=)."""
    state.drop_text_replaced_by_an_image()
    note = from_link() if applies(col) else None  # before the help, which says how the setting ranks
    if col.supports_text:
        label, placeholder = "Describe what you are looking for", "e.g. a red car at night"
        helped = f"Search by text with this index's {model_shown(col)} model"
        if applies(col):  # as the setting beside the box ranks
            helped += {"fused": ", its ranking fused with BM25 over the images' captions and keywords",
                       "vector": " alone (Rank descriptions by: the picture only)",
                       "words": ": the images are ranked by BM25 over their captions and keywords alone (Rank "
                                "descriptions by: the words only)"}[ranking(chosen_weights(col))]
    else:
        label, placeholder = "Search the captions and keywords", "e.g. heron"
        helped = (f"BM25 over each image's caption, keywords, description and file name (this index's "
                  f"{model_shown(col)} model reads no text)")
    if note:
        st.info(note)  # above the box and the setting: a narrow column would make it a tall one
    box, setting = st.columns([3, 2], gap="large") if applies(col) else (st.container(), None)
    with box:
        text = st.text_input(label, key=state.TEXT, bind="query-params", on_change=state.text_changed,
                             placeholder=placeholder, help=helped + "; press Enter.")
    if setting is not None:
        with setting:
            fusion_setting(col)
    return state.text_entered(text)


def examples(col: Collection) -> state.Examples | None:
    """The more-like-these query in the collection; names of a link that are not in it are said and left out."""
    paths = state.more_like_paths()
    if state.examples_cut():
        st.info(state.examples_cut())
    missing = [p for p in sum(paths, []) if col.index.row_of(p) is None] if paths else []
    if missing:
        st.warning(f"Not in this collection, left out: {plain(', '.join(missing))}.")
    return state.examples_in(col, paths)


def first_view_row(col: Collection) -> int | None:
    """The example shown before anyone chooses: the demo's tiger, another folder's most central image."""
    if col.index.root.resolve() == DEMO_DIR.resolve():
        row = col.index.row_of(DEMO_EXAMPLE)
        if row is not None:
            return row
    return col.central_row()


# --- the four sources -----------------------------------------------------------------------------------------

def by_description(col: Collection, index_dir: Path, generation: str, k: int, query: state.Query,
                   example_row: int | None, where: Filter | None) -> Answer | None:
    """The images that best match a description or words, as `query --text --fusion` ranks them: CLIP's ranking
    fused with BM25 over the images' words by reciprocal rank (the weights the page is set to), or either alone;
    BM25 alone on an image-only index."""
    weights = chosen_weights(col)
    try:
        vector = cached.embed_text(str(index_dir), generation, query.text) if col.supports_text else None
        result, embedded = col.query_text(query.text, k, model=lambda: cached.index_model(col), where=where,
                                          fusion=weights, embedded=vector)  # the text embedded once
        if embedded is None:
            return Answer(result, "", described=f"“{plain(query.text, 300)}”", ranked_by="keywords")
        if embedded.truncated:
            st.info(plain(embedded.note, 1000))  # it quotes the text, which may come from the URL
        return Answer(result, "", described=f"“{plain(embedded.text, 300)}”",  # untrusted too
                      ranked_by=ranking(weights) if applies(col) else None, weights=weights)
    except WeightsError as exc:
        weights_help(exc)
    except ImgsimError as exc:
        st.error(say(str(exc)))
    return None


def by_upload(col: Collection, index_dir: Path, generation: str, k: int, query: state.Query,
              example_row: int | None, where: Filter | None) -> Answer | None:
    """Neighbours of an upload (its own row when it is an indexed file)."""
    data = query.upload.getvalue()  # in memory only: never written to disk under its name
    try:
        embedded = cached.embed_upload(str(index_dir), generation, data)
        return Answer(col.query_embedded(embedded, k, where), f"uploaded: {plain(query.upload.name)}",
                      cached.upload_thumb(data), source=embedded[0] if embedded[0] is not None else data,
                      in_link=False)
    except decode.DecodeError as exc:
        st.error(say(f"That upload cannot be used: {exc}."))
    except WeightsError as exc:
        weights_help(exc)
    return None


def by_examples(col: Collection, index_dir: Path, generation: str, k: int, query: state.Query,
                example_row: int | None, where: Filter | None) -> Answer | None:
    """Neighbours of several images to look like, away from those to avoid."""
    pos, neg = query.examples.positives, query.examples.negatives
    result = col.query_examples([(r, None) for r in pos], [(r, None) for r in neg], k, where=where)
    # The images the query was made of (a link's names left out are not), escaped: from the URL or the folder.
    caption = ("more like: " + ", ".join(plain(col.paths[r]) for r in pos)
               + (" · not like: " + ", ".join(plain(col.paths[r]) for r in neg) if neg else ""))
    return Answer(result, caption, thumb(col, pos[0], 256))


def by_image(col: Collection, index_dir: Path, generation: str, k: int, query: state.Query,
             example_row: int | None, where: Filter | None) -> Answer | None:
    """Neighbours of the image query, else of the first view's example."""
    row = state.current_query(col)
    row = example_row if row is None else row
    if row is None:
        return None
    return Answer(col.neighbors_of_row(row, k, where), f"query: {plain(col.paths[row])}", thumb(col, row, 256),
                  source=row)


ANSWERS: dict[str, Callable[..., Answer | None]] = {
    state.UPLOAD: by_upload, state.DESCRIPTION: by_description, state.EXAMPLES: by_examples, state.IMAGE: by_image}


# --- the answer -----------------------------------------------------------------------------------------------

def answer_header(col: Collection, answer: Answer, k: int, applied: Active, farthest: float, searched: int
                  ) -> None:
    """The query (its image and name, or the description) and what the figures below mean."""
    result = answer.result
    q1, q2 = st.columns([1, 3])
    with q1:
        if answer.described is not None:
            st.markdown(f"**Described:**  \n{answer.described}")
        else:
            image_or_placeholder(answer.image)
    with q2:  # the query's name beside its image, where it has room (no mid-word wrapping)
        if answer.described is None:
            st.caption(answer.caption if answer.image else f"{answer.caption} (image file unavailable)")
        if not answer.in_link:
            st.caption("An upload cannot be shared: this page's link names no image while it is the query.")
        matching = (f" of {applied.passing:,} matching the filter" if applied.where is not None else "")
        if answer.ranked_by in ("keywords", "words"):  # BM25 returns only the images with a word of the query
            st.markdown(f"**{len(result.neighbors)} best matches**{matching} (k = {k}).")
        else:
            st.markdown(f"**{len(result.neighbors)} nearest images**{matching} (k = {searched}"
                        + (f", clamped from {k}" if searched < k else "") + ").")
        if applied.where is not None:
            st.caption(f"Filter: {applied.summary}. Only the images that match were searched.")
        if answer.ranked_by == "keywords":
            st.caption("Ranked by BM25 over each image's caption, keywords, description and file name (higher: a "
                       "better match); this index's model reads no text, so there are no distances.")
            return
        if farthest < 2.0:
            st.caption(f"Results farther than {farthest:.2f} are left out: {searched - len(result.neighbors)} of "
                       f"{searched}.")
        # "nearest" is a claim only exact search makes; BM25 alone (the words only) makes none
        if col.search_method == "ann" and answer.ranked_by != "words":
            info = col.search_info()  # recall of images not in the index (as most queries are), when recorded
            out = info.get("recall_at_10_out_of_sample")
            st.caption(f"Found by approximate search: usually, not always, the true nearest (recall@10 "
                       + (f"{out} for images not in the index" if out is not None else
                          f"{info.get('recall_at_10')} for images in the index")
                       + ", measured when the index was built). The distances are exact.")
        if answer.ranked_by == "fused":
            st.caption(f"Ranked by reciprocal rank fusion (k = {RRF_K}; weights {weights_shown(answer.weights)}) of "
                       "the model's ranking and BM25 over the images' captions and keywords: each card says its rank "
                       "in each.")
        elif answer.ranked_by == "vector":
            st.caption("Ranked by CLIP's ranking alone (fusion off): the images' captions and keywords are not "
                       "searched.")
        elif answer.ranked_by == "words":
            st.caption("Ranked by BM25 alone over the images' captions and keywords (vector 0): only images with a "
                       "word of the description are listed. The distances are to CLIP's reading of it.")
        st.caption("Distance: Euclidean between unit feature vectors (0 = identical, 2 = opposite). "
                   "cos: cosine similarity.")


@section
def results(col: Collection, index_dir: Path, generation: str, result: QueryResult, source: int | bytes | None
            ) -> None:
    """The result cards with the Why? panel above them; opening or closing Why? reruns only this."""
    why_slot = st.container()  # above the cards, filled after them: a card's Why? sets what it shows
    results_grid(col, result, key="more", can_explain=source is not None and col.can_explain)
    with why_slot:
        why_panel(col, index_dir, generation, result, source)


def why_panel(col: Collection, index_dir: Path, generation: str, result: QueryResult, source: int | bytes | None
              ) -> None:
    """The query and the chosen result with a 7x7 heat overlay of each cell's part in their similarity."""
    path = state.why_path()
    row = col.index.row_of(path) if path else None
    if source is None or row is None or not col.can_explain or row not in {n.row for n in result.neighbors}:
        return
    with st.container(border=True, key="why_panel"):
        head, close = st.columns([5, 1])
        head.markdown(f"**Why is {plain(path)} similar to the query?**")
        close.button("Close", key="why_close", width="stretch", on_click=state.close_why)
        try:
            if col.index.pooling == "avg":
                with st.spinner("Loading ResNet50 to compute both 7×7×2048 feature maps: this index stores "
                                "pooled vectors, so the model is needed…"):
                    e = cached.explanation(str(index_dir), generation, source, row)
            else:
                e = cached.explanation(str(index_dir), generation, source, row)
            left_img = cached.model_view(str(index_dir), generation, source)
            right_img = cached.model_view(str(index_dir), generation, row)
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
