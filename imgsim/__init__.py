"""imgsim: image similarity over a folder of images.

Three backbones (ResNet50 the reference, EfficientNet-Lite0 real features offline, CLIP for text queries),
exact or approximate search, a 2-D map of the collection, near-duplicates and clusters::

    from imgsim import Collection, build_index
    build_index("photos/", "photos.imgsim", weights="random")
    collection = Collection.open("photos.imgsim")
    collection.neighbors_of_row(0, k=5)

The public names are imported on first use, so ``import imgsim`` loads neither TensorFlow nor faiss.
"""

import importlib

__version__ = "0.1.0"

#: Each public name and where it lives, as "module:attribute": imported when it is first asked for (PEP 562).
_PUBLIC = {
    "Collection": "imgsim.collection:Collection",
    "build_index": "imgsim.build:build_index",
    "load_index": "imgsim.store.generations:load_index",
}
__all__ = ["Collection", "build_index", "load_index", "__version__"]


def __getattr__(name: str) -> object:
    """A public name, imported on its first use."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'imgsim' has no attribute {name!r}")
    module, _, attribute = _PUBLIC[name].partition(":")
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
