"""What reaches the page: server paths replaced by the names visitors know, errors turned into messages, the log.

The replacements are kept per session, in ``st.session_state``: this module is imported once per process and
shared by every session, so a module-level table would let one visitor's server paths (and the names they are
shown by) reach another visitor's page, e.g. in a fragment's rerun while another session rebuilds the table.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import streamlit as st

from dashboard import state
from dashboard.paths import APP_DIR
from imgsim.collection import Collection
from imgsim.errors import ImgsimError, SkipReason
from imgsim.models.resnet50 import how_to_supply_weights
from imgsim.serving import policy as serving
from imgsim.serving.policy import plain

LOG = logging.getLogger("imgsim.app")
if not LOG.handlers:  # one handler per process; Streamlit configures only its own loggers
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    LOG.addHandler(_handler)
    LOG.setLevel(logging.INFO)


def _redactions() -> dict[str, str]:
    return st.session_state.setdefault(state.REDACTIONS, {})


def set_redactions(folder: Path, index_dir: Path, name: str, weights: str) -> None:
    """This session's server paths that messages must not show, and what to show instead (rebuilt each run)."""
    st.session_state[state.REDACTIONS] = {
        str(index_dir): "(the index)", os.path.realpath(index_dir): "(the index)", str(folder): name,
        os.path.realpath(folder): name, str(APP_DIR): "(the app)",
        str(Path.home()): "~"}  # the weights help names the Keras cache under it
    redact_weights(weights)


def redact(path: str, shown: str, replace: bool = True) -> None:
    """Show ``path`` as ``shown`` on this session's page (``replace=False``: unless it already has a name)."""
    if replace:
        _redactions()[path] = shown
    else:
        _redactions().setdefault(path, shown)


def redact_weights(weights: str) -> None:
    """A weights file (IMGSIM_WEIGHTS=PATH, or the one an index records) stays on the server: errors quote it."""
    if weights_name(weights) != weights:
        file = Path(weights.strip()).expanduser()
        for path in (weights.strip(), str(file), os.path.realpath(file)):
            redact(path, "(the weights file)")


def say(text: str) -> str:
    """A message for the page that may quote a server path: those paths replaced by visitor names, and the whole
    shown as text, since it may also quote folder and file names (and what the visitor typed)."""
    return plain(serving.redact(text, _redactions()), 2000)


def skip_detail(skipped) -> str:
    """A skipped file's detail for visitors: a symlink's target can be any server path, so it is not shown
    (the CLI's `info` gives it to the operator)."""
    if skipped.reason in (SkipReason.OUTSIDE, SkipReason.DANGLING, SkipReason.LOOP):
        return "(target not shown)"
    return serving.shorten(serving.redact(skipped.detail, _redactions()))


def weights_name(weights: str) -> str:
    """Weights as a visitor may see them: a file's path stays on the server."""
    return weights if weights == "imagenet" or weights.startswith("random") else "a local weights file"


def model_shown(col: Collection) -> str:
    """The index's backbone as visitors may see it: a local preset folder by its name, not its server path."""
    spec = col.backbone
    return plain(f"{spec.name}:{Path(spec.preset).name}" if spec.preset else spec.name)


def weights_help(error: Exception) -> None:
    """Why the model's weights cannot be loaded, and how to supply them."""
    st.error("**The model's weights cannot be loaded.** " + say(str(error).split("\n", 1)[0]))
    how = getattr(error, "how_to", None)  # CLIP errors carry their own instructions
    st.markdown("**How to supply them**\n\n"
                + serving.redact(how(markdown=True) if how else how_to_supply_weights(markdown=True), _redactions()))


@contextmanager
def shown_errors() -> Iterator[None]:
    """The error boundary of the page and of each fragment's rerun: a message, never a traceback.

    st.rerun and st.stop pass through (they are not Exceptions).
    """
    try:
        yield
    except ImgsimError as exc:  # includes an index changed under the running server (IndexFormatError)
        st.error(say(str(exc)))
    except Exception as exc:  # the last line of defence: a message on the page, the traceback in the log
        LOG.exception("unexpected error")  # its text stays there too: it may quote any server path
        st.error(f"Something went wrong ({type(exc).__name__}). The details are in the server log.")
