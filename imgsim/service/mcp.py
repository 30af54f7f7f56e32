"""The MCP server: ``python -m imgsim mcp INDEX`` speaks the Model Context Protocol on stdio.

A desktop LLM client starts it and gets tools over one index, with the HTTP API's operations and limits
(:class:`~imgsim.service.operations.Service`): search by text, by image or by example, a look at any image
(``get_image`` returns the thumbnail as MCP image content), duplicates, clusters and explanations. Results are
JSON text; a refusal is a tool error with one line the model can act on.
"""

# No ``from __future__ import annotations``: the SDK reads the tools' annotations, some local to make_server.
import functools
import logging
import os
from typing import Annotated, Callable, TypeVar

from mcp.server.mcpserver import Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from imgsim import __version__
from imgsim.errors import ImgsimError
from imgsim.metadata.filters import MAX_CLAUSES
from imgsim.service.limits import base64_image
from imgsim.service.operations import SearchQuery, Service

T = TypeVar("T")
log = logging.getLogger("imgsim.service")

#: What a caller reads about a failure that is not a refusal (the HTTP API's 500 says the same).
INTERNAL_ERROR = "Internal error: the server log has the details."
INSTRUCTIONS = """Image similarity over one indexed collection of images. Images are named by their path
relative to the collection (e.g. 'beach/001.jpg'), exactly as results give them. Distances go from 0 (the same
image) to 2; similarity is the cosine. Start with collection_info to see how many images there are, whether
search_text works (capabilities.text) and which metadata fields 'where' can filter on (metadata.fields). Use
get_image to look at any result."""

Path_ = Annotated[str, Field(description="an image's path relative to the collection, as results give it, "
                                         "e.g. 'beach/001.jpg'")]
Where = Annotated[list[str], Field(description=(
    f"metadata filters applied before similarity, ANDed (at most {MAX_CLAUSES}), each 'FIELD OP VALUE' with OP one "
    "of = != < <= > >= ~ (contains) or 'in [a, b]': e.g. 'taken >= 2023-07', 'camera ~ canon', "
    "'folder in [beach, city]'; collection_info lists the fields under metadata.fields"))]
Near = Annotated[str | None, Field(description="only images taken within KM kilometres of a place: 'LAT,LON,KM', "
                                               "e.g. '48.85,2.35,10'")]
MaxDistance = Annotated[float | None, Field(ge=0, le=2, description="drop results farther than this distance")]


def make_server(service: Service) -> MCPServer:
    """An MCP server whose tools answer from ``service``, within its limits (those of the HTTP API)."""
    limits = service.limits
    server = MCPServer("imgsim", instructions=INSTRUCTIONS, version=__version__)
    K = Annotated[int, Field(ge=1, le=limits.max_k, description="how many results (nearest first)")]
    ten = min(10, limits.max_k)  # the tools' default k
    examples = (f"at most {limits.max_examples} images in all with path, also_like and not_like")

    def tool(fn: Callable[..., T]) -> Callable[..., T]:
        """Register ``fn`` as a tool whose every failure reaches the model as one line without a server path."""
        @functools.wraps(fn)  # the SDK reads the signature and the docstring through the wrapper
        def safe(*args, **kwargs) -> T:
            try:
                return fn(*args, **kwargs)
            except ToolError:
                raise
            except ImgsimError as exc:  # the caller's mistake or a missing capability: say what to do instead
                raise ToolError(service.message(exc)) from None
            except Exception:  # a bug or the disk: the detail (paths, traceback) stays in the server's log
                log.exception("MCP tool %s failed", fn.__name__)
                raise ToolError(INTERNAL_ERROR) from None
        return server.tool()(safe)

    @tool
    def collection_info() -> dict:
        """What the collection holds: the number of images, the model that indexed it, whether text search,
        explanations and clusters are available ('capabilities'), its metadata fields, and the limits of every
        tool."""
        return service.info()

    @tool
    def search_text(text: Annotated[str, Field(min_length=1, max_length=limits.max_text_chars,
                                               description="what to look for, e.g. 'a red car at night'")],
                    k: K = ten, where: Where = [], near: Near = None, max_distance: MaxDistance = None) -> dict:
        """Find the images that best match a description. Works on CLIP indexes, and by keywords on collections
        whose images have text (captions, keywords: collection_info says so under capabilities.text and
        metadata.keywords). Returns neighbors: [{path, distance, similarity}], best first."""
        return service.search(SearchQuery(k=k, text=text, where=tuple(where), near=near, max_distance=max_distance))

    @tool
    def search_image(path: Annotated[str | None, Field(description="an image of the collection, by relative path")]
                     = None,
                     image_base64: Annotated[str | None, Field(description="or any image file (JPEG, PNG, WebP...), "
                                                                           "base64-encoded")] = None,
                     k: K = ten, where: Where = [], near: Near = None) -> dict:
        """Reverse image search: the images that look most like this one. Give either a path in the collection
        or the bytes of any image in base64. Returns neighbors: [{path, distance, similarity}], nearest first
        (an image of the collection comes first, at distance 0, when it passes the filters)."""
        if (path is None) == (image_base64 is None):
            raise ToolError("Give either path (an image of the collection) or image_base64 (any image), not both.")
        if path is not None:
            return service.similar(path, k, where=where, near=near)
        return service.search(SearchQuery(k=k, image=base64_image(image_base64, limits.max_body_bytes),
                                          where=tuple(where), near=near))

    @tool
    def similar_to(path: Path_,
                   also_like: Annotated[list[str], Field(max_length=limits.max_examples, description=(
                       f"more images the results should look like ({examples})"))] = [],
                   not_like: Annotated[list[str], Field(max_length=limits.max_examples, description=(
                       f"images the results should not look like ({examples})"))] = [],
                   k: K = ten, deduplicate: Annotated[float | None, Field(ge=0, le=2, description=(
                       "drop a result within this distance of a better one (near-copies), e.g. 0.3"))] = None,
                   max_distance: MaxDistance = None, where: Where = [], near: Near = None) -> dict:
        """More like this: the nearest images to one image of the collection (itself first, at distance 0), or to
        several ('also_like') and away from others ('not_like'). Use it to recommend or to explore around a result."""
        return service.search(SearchQuery(k=k, positive=(path, *also_like), negative=tuple(not_like),
                                          deduplicate=deduplicate, max_distance=max_distance, where=tuple(where),
                                          near=near))

    @tool
    def get_image(path: Path_, size: Annotated[int, Field(ge=limits.thumbnail_min, le=limits.thumbnail_max,
                                                          description="longest side in pixels")] = limits.thumbnail_default) -> Image:
        """Look at an image of the collection: a JPEG thumbnail, to check what a search found."""
        return Image(data=service.thumbnail(path, size), format="jpeg")

    @tool
    def duplicates(threshold: Annotated[float, Field(ge=0, le=limits.max_threshold, description=(
                       "largest distance between two images of a group: about 0.1 for copies and re-encodes, "
                       "larger for near-duplicates; nearest_distance_distribution helps choose"))],
                   max_groups: Annotated[int, Field(ge=1, le=limits.max_listed_groups,
                                                    description="groups listed at most")] = 50) -> dict:
        """Groups of near-duplicate images (chains of pairs within the threshold), largest groups first. The scan
        stops after a fixed number of linked pairs; the answer then says truncated (its groups are incomplete) and
        a lower threshold is the fix."""
        data = service.duplicates(threshold)
        data["groups_total"] = len(data["groups"])
        data["groups"], data["nearest"] = data["groups"][:max_groups], data["nearest"][:max_groups]
        return data

    @tool
    def clusters(k: Annotated[int | None, Field(ge=1, le=limits.max_clusters, description=(
                     "number of clusters; leave it out for the suggested k (best silhouette score)"))] = None,
                 central: Annotated[int, Field(ge=1, le=limits.max_central, description=(
                     "most central images listed per cluster"))] = 5,
                 max_paths: Annotated[int, Field(ge=0, le=limits.max_listed_paths, description=(
                     "member paths listed per cluster (size gives the count)"))] = 20) -> dict:
        """Group the collection into albums of similar images (k-means). Each cluster has its size, its most
        central images and its members, nearest to the centre first."""
        data = service.clusters(k, central)
        for c in data["clusters"]:
            c["paths"] = c["paths"][:max_paths]
        return data

    @tool
    def explain(a: Path_, b: Path_) -> dict:
        """Why two images of the collection are similar: their cosine and the contribution of each cell of a 7x7
        grid over the image (top row first). Needs a ResNet50 index (collection_info: capabilities.explain)."""
        return service.explain(a, b)

    return server


def run_stdio(index_dir: str | os.PathLike) -> int:
    """Serve the index's tools on stdin/stdout until the client closes them."""
    make_server(Service.open(index_dir)).run("stdio")
    return 0
