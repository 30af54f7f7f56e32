"""clip-retrieval's ``POST /knn-service`` over a :class:`~imgsim.service.operations.Service`, so that code
written for LAION's ``clip back`` (its ``ClipClient``) can point at an imgsim server.

The request is clip-retrieval's: ``text``, ``image`` (base64) or ``embedding_input``; ``num_images``;
``deduplicate`` (its cosine 0.94, :data:`~imgsim.service.limits.CLIP_RETRIEVAL_DEDUP` as a distance). The answer
is its list of ``{id, similarity, url, caption}``, with imgsim's ``distance`` and ``path``.
"""

from __future__ import annotations

from typing import Callable

from imgsim.service.limits import CLIP_RETRIEVAL_DEDUP, ApiError, base64_image
from imgsim.service.operations import SearchQuery, Service


def knn_service(service: Service, payload: object, image_url: Callable[[str], str]) -> list[dict]:
    """The neighbours of one clip-retrieval query, nearest first; ``image_url`` names each result's thumbnail.

    ``image_url`` in the request is refused (the server fetches nothing) and so is ``modality: text`` (there is
    no caption index); the safety and aesthetic settings are ignored (there are no such models here).
    """
    if not isinstance(payload, dict):
        raise ApiError(400, "The body must be a JSON object, as clip-retrieval's ClipClient sends.")
    if payload.get("image_url"):
        raise ApiError(400, "image_url is not supported (this server fetches nothing): send the image itself, "
                            "base64-encoded, in image.")
    if (payload.get("modality") or "image") != "image":
        raise ApiError(400, "Only modality 'image' is served: this index holds image vectors.")
    image = payload.get("image")
    query = SearchQuery(k=payload.get("num_images", 40), text=payload.get("text") or None,
                        vector=payload.get("embedding_input") or None,
                        image=base64_image(image, service.limits.max_body_bytes) if image else None,
                        deduplicate=CLIP_RETRIEVAL_DEDUP if payload.get("deduplicate") else None)
    row_of = service.collection.index.row_of
    return [{"id": row_of(n["path"]), "similarity": n["similarity"], "distance": n["distance"], "path": n["path"],
             "url": image_url(n["path"]), "caption": n["path"]} for n in service.search(query)["neighbors"]]
