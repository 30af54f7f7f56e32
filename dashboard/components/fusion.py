"""How the Search tab ranks a description on a CLIP index whose images have words: by CLIP's ranking, by BM25 over
the captions and keywords, or by the two fused by reciprocal rank with weights (``query --fusion``). The setting is
kept in the URL (``?fusion=`` in ``--fusion``'s spelling: ``off``, ``vector=1,keywords=0.5``), where it is
untrusted: parsed by ``parse_fusion``, never evaluated, and a value that cannot be used is said as text."""

from __future__ import annotations

import streamlit as st

from dashboard import state
from imgsim.collection import Collection
from imgsim.metadata.fields import MetadataError
from imgsim.metadata.fusion import DEFAULT_WEIGHTS, parse_fusion
from imgsim.serving.policy import plain

OFF = "off"
WORDS_ONLY = "vector=0,keywords=1"
#: The setting's choices, ``--fusion`` spelling -> what a visitor reads, from the picture alone to the words alone.
CHOICES = {OFF: "the picture only", "vector=1,keywords=0.5": "mostly the picture",
           "vector=1,keywords=1": "picture and words equally", "vector=0.5,keywords=1": "mostly the words",
           WORDS_ONLY: "the words only"}


def _number(w: float) -> str:
    short = f"{w:g}"
    return short if float(short) == w else repr(w)  # the link's own weight, not a rounded one


def spelled(weights: dict[str, float] | None) -> str:
    """The ``--fusion`` spelling of weights; weights that rank alike are spelled alike: a keywords weight of 0 is
    CLIP alone (``off``), a vector weight of 0 BM25 alone (whatever the keywords weight)."""
    if weights is None or not weights.get("keywords"):
        return OFF
    if not weights.get("vector"):
        return WORDS_ONLY
    return ",".join(f"{name}={_number(weights[name])}" for name in DEFAULT_WEIGHTS)


DEFAULT = spelled(DEFAULT_WEIGHTS)


def applies(col: Collection) -> bool:
    """Whether a description is fused: the index reads text (CLIP) and its images have words (BM25's)."""
    return col.supports_text and col.has_text_metadata


def weights_shown(weights: dict[str, float]) -> str:
    """Fusion weights as the page states them: ``vector 1, keywords 0.5``."""
    return ", ".join(f"{name} {_number(weights[name])}" for name in DEFAULT_WEIGHTS)


def ranking(weights: dict[str, float] | None) -> str:
    """What ranks under these weights: "vector" (CLIP alone), "words" (BM25 alone) or "fused"."""
    return {OFF: "vector", WORDS_ONLY: "words"}.get(spelled(weights), "fused")


def _words_share(spelling: str) -> float:
    weights = parse_fusion(spelling)
    return 0.0 if weights is None else weights["keywords"] / (weights["vector"] + weights["keywords"])


def _label(spelling: str) -> str:
    return CHOICES.get(spelling) or f"{weights_shown(parse_fusion(spelling))} (the link's weights)"


def from_link() -> str | None:
    """Before the setting is drawn the first time: it is the link's ``?fusion=`` (weights that are not among the
    choices become one more), else the default; the note saying that the link's cannot be used (Markdown), else
    None."""
    if state.FUSION in st.session_state:
        return None
    st.session_state[state.FUSION] = DEFAULT  # set here, not as the widget's value: Streamlit warns of both
    if state.FUSION not in st.query_params:
        return None
    raw = st.query_params.get(state.FUSION) or ""
    try:
        asked = spelled(parse_fusion(raw))
    except MetadataError as exc:
        return (f"The link's ranking setting cannot be used ({plain(str(exc), 300)}): ranking descriptions by "
                f"{CHOICES[DEFAULT]}.")
    if asked not in CHOICES:
        st.session_state[state.FUSION_LINKED] = asked
    st.session_state[state.FUSION] = asked
    return None


def fusion_setting(col: Collection) -> None:
    """The setting, where a description is fused (:func:`applies`), after :func:`from_link`; the URL says what it
    is set to."""
    options = sorted([*CHOICES, *filter(None, [st.session_state.get(state.FUSION_LINKED)])], key=_words_share)
    chosen = st.select_slider(
        "Rank descriptions by", options, format_func=_label, key=state.FUSION,
        help="What a description is matched with: what CLIP sees in each picture, the words of the images' "
             "captions and keywords (BM25), or both, their rankings fused by reciprocal rank. In the link as "
             "?fusion= (the spelling of `query --fusion`).")
    if chosen == DEFAULT:
        if state.FUSION in st.query_params:
            del st.query_params[state.FUSION]
    else:
        st.query_params[state.FUSION] = chosen


def chosen_weights(col: Collection) -> dict[str, float] | None:
    """The weights a description is ranked with (None: CLIP alone), as ``query --text --fusion`` takes them."""
    if not applies(col):
        return dict(DEFAULT_WEIGHTS)  # what query --text uses without --fusion (and what the page cannot change)
    return parse_fusion(st.session_state.get(state.FUSION, DEFAULT))
