"""The MCP server: ``python -m imgsim mcp INDEX`` speaks the Model Context Protocol on stdio.

A desktop LLM client starts it and gets tools over one index, with the HTTP API's operations and limits
(:class:`~imgsim.service.operations.Service`): search by text, by image or by example, a look at any image
(``get_image`` returns the thumbnail as MCP image content), duplicates, clusters and explanations. Results are
JSON text; a refusal is a tool error with one line the model can act on.
"""

# No ``from __future__ import annotations``: the SDK reads the tools' annotations, some local to make_server.
import os
from typing import Annotated, Callable, TypeVar

from mcp.server.mcpserver import Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from imgsim import __version__
from imgsim.errors import ImgsimError
from imgsim.service.limits import base64_image
from imgsim.service.operations import SearchQuery, Service

T = TypeVar("T")

INSTRUCTIONS = """Image similarity over one indexed collection of images. Images are named by their path
relative to the collection (e.g. 'beach/001.jpg'), exactly as results give them. Distances go from 0 (the same
image) to 2; similarity is the cosine. Start with collection_info to see how many images there are and whether
search_text works (it needs a CLIP index). Use get_image to look at any result."""

Path_ = Annotated[str, Field(description="an image's path relative to the collection, as results give it, "
                                         "e.g. 'beach/001.jpg'")]


def make_server(service: Service) -> MCPServer:
    """An MCP server whose tools answer from ``service``."""
    limits = service.limits
    server = MCPServer("imgsim", instructions=INSTRUCTIONS, version=__version__)
    K = Annotated[int, Field(ge=1, le=limits.max_k, description="how many results (nearest first)")]

    def answer(fn: Callable[..., T], *args) -> T:
        try:
            return fn(*args)
        except ImgsimError as exc:  # the caller's mistake or a missing capability: say what to do instead
            raise ToolError(service.message(exc)) from None

    @server.tool()
    def collection_info() -> dict:
        """What the collection holds: the number of images, the model that indexed it, whether text search,
        explanations and clusters are available ('capabilities'), and the limits of every tool."""
        return answer(service.info)

    @server.tool()
    def search_text(text: Annotated[str, Field(min_length=1, max_length=limits.max_text_chars,
                                               description="what to look for, e.g. 'a red car at night'")],
                    k: K = 10) -> dict:
        """Find the images that best match a description. Works only on CLIP indexes (collection_info says so
        under capabilities.text). Returns neighbors: [{path, distance, similarity}], best first."""
        return answer(service.search, SearchQuery(k=k, text=text))

    @server.tool()
    def search_image(path: Annotated[str | None, Field(description="an image of the collection, by relative path")]
                     = None,
                     image_base64: Annotated[str | None, Field(description="or any image file (JPEG, PNG, WebP...), "
                                                                           "base64-encoded")] = None,
                     k: K = 10) -> dict:
        """Reverse image search: the images that look most like this one. Give either a path in the collection
        or the bytes of any image in base64. Returns neighbors: [{path, distance, similarity}], nearest first
        (an image of the collection comes first, at distance 0)."""
        if (path is None) == (image_base64 is None):
            raise ToolError("Give either path (an image of the collection) or image_base64 (any image), not both.")
        if path is not None:
            return answer(service.similar, path, k)
        return answer(lambda: service.search(SearchQuery(
            k=k, image=base64_image(image_base64, limits.max_body_bytes))))

    @server.tool()
    def similar_to(path: Path_,
                   also_like: Annotated[list[str], Field(max_length=limits.max_examples,
                                                         description="more images the results should look like")] = [],
                   not_like: Annotated[list[str], Field(max_length=limits.max_examples,
                                                        description="images the results should not look like")] = [],
                   k: K = 10, deduplicate: Annotated[float | None, Field(ge=0, le=2, description=(
                       "drop a result within this distance of a better one (near-copies), e.g. 0.3"))] = None) -> dict:
        """More like this: the nearest images to one image of the collection (itself first, at distance 0), or to
        several ('also_like') and away from others ('not_like'). Use it to recommend or to explore around a result."""
        return answer(service.search, SearchQuery(k=k, positive=(path, *also_like), negative=tuple(not_like),
                                                  deduplicate=deduplicate))

    @server.tool()
    def get_image(path: Path_, size: Annotated[int, Field(ge=limits.thumbnail_min, le=limits.thumbnail_max,
                                                          description="longest side in pixels")] = 256) -> Image:
        """Look at an image of the collection: a JPEG thumbnail, to check what a search found."""
        return Image(data=answer(service.thumbnail, path, size), format="jpeg")

    @server.tool()
    def duplicates(threshold: Annotated[float, Field(ge=0, le=2, description=(
                       "largest distance between two images of a group: about 0.1 for copies and re-encodes, "
                       "larger for near-duplicates; nearest_distance_distribution helps choose"))],
                   max_groups: Annotated[int, Field(ge=1, le=1000, description="groups listed at most")] = 50) -> dict:
        """Groups of near-duplicate images (chains of pairs within the threshold), largest groups first."""
        data = answer(service.duplicates, threshold)
        data["groups_total"] = len(data["groups"])
        data["groups"], data["nearest"] = data["groups"][:max_groups], data["nearest"][:max_groups]
        return data

    @server.tool()
    def clusters(k: Annotated[int | None, Field(ge=1, le=limits.max_clusters, description=(
                     "number of clusters; leave it out for the suggested k (best silhouette score)"))] = None,
                 central: Annotated[int, Field(ge=1, le=limits.max_central, description=(
                     "most central images listed per cluster"))] = 5,
                 max_paths: Annotated[int, Field(ge=0, le=10000, description=(
                     "member paths listed per cluster (size gives the count)"))] = 20) -> dict:
        """Group the collection into albums of similar images (k-means). Each cluster has its size, its most
        central images and its members, nearest to the centre first."""
        data = answer(service.clusters, k, central)
        for c in data["clusters"]:
            c["paths"] = c["paths"][:max_paths]
        return data

    @server.tool()
    def explain(a: Path_, b: Path_) -> dict:
        """Why two images of the collection are similar: their cosine and the contribution of each cell of a 7x7
        grid over the image (top row first). Needs a ResNet50 index (collection_info: capabilities.explain)."""
        return answer(service.explain, a, b)

    return server


def run_stdio(index_dir: str | os.PathLike) -> int:
    """Serve the index's tools on stdin/stdout until the client closes them."""
    make_server(Service.open(index_dir)).run("stdio")
    return 0
