"""Indexing from the page: one server-side job per index folder, shared by every session, and its progress."""

from __future__ import annotations

import os
import time
from pathlib import Path

import streamlit as st

from dashboard import cached, state
from dashboard.messages import LOG, say, weights_help
from dashboard.paths import DEMO_DIR
from dashboard.settings import Settings
from imgsim.collection import Collection, default_index_dir
from imgsim.errors import ImgsimError
from imgsim.models.base import Backbone, BackboneSpec
from imgsim.models.resnet50 import keras_cache_path
from imgsim.models.weights import WeightsError
from imgsim.serving import jobs
from imgsim.serving.policy import plain
from imgsim.store.generations import index_exists


#: What a first run indexes with when ResNet50's ImageNet weights cannot be had: its weights install with pip.
OFFLINE_BACKBONE = BackboneSpec.parse("efficientnet-lite0")
OFFLINE_NOTICE = ("EfficientNet-Lite0 ImageNet features — ResNet50's weights could not be loaded; see "
                  "docs/weights.md to use them")


def offline_fallback(s: Settings) -> bool:
    """Whether a new index may use :data:`OFFLINE_BACKBONE` when ResNet50's weights are missing: only when the
    operator asked for no weights (no IMGSIM_WEIGHTS); a named file or random weights are never replaced."""
    return s.weights == "imagenet" and not os.environ.get("IMGSIM_WEIGHTS")


def sidecar_file(s: Settings) -> Path | None:
    """The sidecar the page indexes with (`index --metadata FILE`): IMGSIM_METADATA for the server's own
    collection, else the demo's captions for the demo; a folder a visitor typed has none (an earlier run's
    columns are kept)."""
    if not s.automatic:
        return None
    named = os.environ.get("IMGSIM_METADATA")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():  # the page never shows a server path: the operator finds it in the log
            LOG.warning("IMGSIM_METADATA=%s is not a file", named)
            raise ImgsimError("The setting IMGSIM_METADATA names no file (its value is in the server log): set it "
                              "to a CSV or JSON Lines file keyed by 'path' (relative to the image folder), or "
                              "unset it.")
        return path
    demo = DEMO_DIR / "captions.csv"
    return demo if s.folder.resolve() == DEMO_DIR.resolve() and demo.is_file() else None


def _new_index_model(s: Settings) -> tuple[BackboneSpec, Backbone]:
    """The backbone and model a new index is built with: `index`'s default, else offline EfficientNet-Lite0."""
    spec = BackboneSpec.parse(None)  # what `index` builds by default
    try:
        return spec, cached.load_model(spec.spec, s.weights, spec.default_pooling())
    except WeightsError as exc:
        if not offline_fallback(s):
            raise
        LOG.info("ResNet50 weights unavailable (%s); indexing with %s", str(exc).split("\n", 1)[0],
                 OFFLINE_BACKBONE.spec)
    spec = OFFLINE_BACKBONE
    return spec, cached.load_model(spec.spec, "imagenet", spec.default_pooling())


def start_indexing(s: Settings, col: Collection | None, backbone: BackboneSpec | None = None) -> jobs.JobSnapshot:
    """Start (or attach to) the server-side indexing job of this index folder.

    The model is loaded here, in the script run, so missing weights show at once in this page; the job
    itself runs in a server thread, so a reload or a closed tab neither stops nor restarts it. ``backbone``
    re-indexes the whole folder with that backbone (and ``s.weights``) in place of the index's own.
    """
    registry = cached.job_registry()
    running = registry.get(str(s.index_dir))
    if running is not None and running.running:
        return running
    new = col is None or backbone is not None
    sidecar = sidecar_file(s)  # a missing IMGSIM_METADATA file is said before any model is loaded
    # The process's cached model (the one the index records): an update never builds another one.
    if backbone is not None:
        spec, model = backbone, cached.load_model(backbone.spec, s.weights, backbone.default_pooling())
    elif col is None:
        spec, model = _new_index_model(s)
    else:
        spec, model = col.backbone, cached.index_model(col)

    def work(progress):
        from imgsim.build import build_index  # indexing only: opening an existing index never imports it

        return build_index(s.folder, s.index_dir, weights=s.weights if new else None, progress=progress,
                           backbone=spec.spec if new else None, rebuild=backbone is not None,
                           model_factory=lambda w, p, b: model, metadata=sidecar)

    snap = registry.start(str(s.index_dir), work)
    if running is None or snap.number != running.number:
        LOG.info("indexing job #%d started for %s", snap.number, s.index_dir)
    registry.wait(str(s.index_dir), timeout=3.0)  # a small folder finishes inside this run: no progress flash
    return registry.get(str(s.index_dir)) or snap


def offline_notice(s: Settings, col: Collection, allow_indexing: bool) -> None:
    """Above every view of an index the first run built with :data:`OFFLINE_BACKBONE`: what its features are,
    and, once ResNet50's weights are in the Keras cache, a button to re-index with them."""
    if col.backbone != OFFLINE_BACKBONE or not offline_fallback(s):
        return
    if s.index_dir != default_index_dir(s.folder, s.weights):
        return  # an index named by IMGSIM_INDEX was built with Lite0 on purpose: nothing to say, nothing to replace
    if not (allow_indexing and keras_cache_path().is_file()):
        st.info(OFFLINE_NOTICE, icon=":material/info:")
        return
    st.info("EfficientNet-Lite0 ImageNet features — ResNet50's weights are available now: re-index this "
            "folder to use them.", icon=":material/info:")
    if st.button("Re-index with ResNet50", key="reindex_resnet50"):
        start_indexing(s, col, BackboneSpec.parse(None))
        st.rerun()


@st.fragment(run_every=1.0)
def indexing_progress(index_dir: str) -> None:
    """The job's live progress, polled once a second; the whole page reruns when it has finished."""
    snap = cached.job_registry().get(index_dir)
    if snap is None or not snap.running:
        st.rerun()
    st.progress(snap.fraction, text=snap.describe())
    st.caption(f"Indexing job #{snap.number}, started {time.strftime('%H:%M:%S', time.gmtime(snap.started))} "
               "UTC, runs on the server: every visitor of this collection sees it, and closing or reloading "
               "this page neither stops nor restarts it.")


def job_outcome(snap: jobs.JobSnapshot | None) -> None:
    """What a finished job left for this session: a toast once when it committed (to a session that watched
    it), or its error."""
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
    seen = st.session_state.setdefault(state.JOBS_SEEN, set())
    report = snap.result
    # Only to sessions that watched it: a visitor arriving later is not greeted with an old job's figures.
    if snap.number not in seen and state.watched_job(snap.number) and report is not None and report.committed:
        st.toast(f"Indexed {report.indexed} images ({report.extracted} extracted"
                 + (f" at {report.images_per_second:.1f} images/s" if report.extracted else "") + ")")
    seen.add(snap.number)


def ready_collection(s: Settings, col: Collection | None, wants_index: bool, name: str,
                     allow_indexing: bool) -> Collection | None:
    """The collection to show once any indexing this run starts or follows allows it; None: the page stops here
    (the job's progress, its error, or why there is no index yet is shown)."""
    exists = col is not None
    job = cached.job_registry().get(str(s.index_dir))
    retry_failed = job is None or job.state != jobs.FAILED or time.time() - (job.finished or 0) > 30
    if wants_index or (not exists and s.automatic and retry_failed and not (job and job.state == jobs.DONE)):
        try:
            job = start_indexing(s, col)
            state.watch_job(job.number)
        except WeightsError as exc:
            weights_help(exc)
            if not exists:
                return None
        except ImgsimError as exc:  # IMGSIM_METADATA names no file
            st.error(say(str(exc)))
            if not exists:
                return None
    if job is not None and job.running:
        state.watch_job(job.number)
        indexing_progress(str(s.index_dir))
        if not exists:
            return None
    job_outcome(job)
    if index_exists(s.index_dir):
        col = cached.current_collection(s.index_dir)
        offline_notice(s, col, allow_indexing)
        return col
    if job is not None and job.state == jobs.FAILED:
        return None
    if allow_indexing:
        st.info(f"{plain(name)} has no index yet. Press **Index this folder** in the sidebar.")
    else:
        st.info(f"{plain(name)} has no index yet, and indexing from the page is turned off on this server. "
                "Its operator can build one with `python -m imgsim index`.")
    return None
