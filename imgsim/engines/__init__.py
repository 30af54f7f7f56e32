"""Extraction engines by name, imported on use: ``local`` (this process) and ``ray`` (a Ray Data job).

The interface is :mod:`imgsim.engines.base`; :func:`make_engine` is the one way to build an engine.
"""

from __future__ import annotations

import importlib

from imgsim.engines.base import Engine, ModelFactory
from imgsim.errors import ImgsimError

#: Engine name -> ``module:class``, imported when that engine is made.
ENGINES = {"local": "imgsim.engines.local:LocalEngine", "ray": "imgsim.engines.ray:RayEngine"}


def make_engine(name: str = "local", *, address: str | None = None,
                model_factory: ModelFactory | None = None) -> Engine:
    """The engine called ``name``: one on a cluster (``ray``) takes its ``address`` (none: a local instance);
    one in this process (``local``) takes a ``model_factory``."""
    if name not in ENGINES:
        raise ImgsimError(f"Unknown engine '{name}': use one of {', '.join(ENGINES)}.")
    module, _, attribute = ENGINES[name].partition(":")
    cls = getattr(importlib.import_module(module), attribute)
    if cls.cluster:
        return cls(address=address)
    if address:
        raise ImgsimError("--ray-address needs --engine ray.")
    return cls(model_factory)
