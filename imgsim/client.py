"""A Python client of the HTTP API (``python -m imgsim serve``), on the standard library alone.

    from imgsim.client import Client
    client = Client("http://127.0.0.1:8600", token=open("token.txt").read().strip())
    client.similar("beach/001.jpg", k=5)["neighbors"]

Every method returns the server's JSON (the CLI's ``--json`` for the same inputs); a refusal raises
:class:`ClientError` with the server's status and one-line message. ``langchain_retriever`` and
``llamaindex_retriever`` wrap a client for those frameworks when they are installed.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Sequence
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode
from urllib.request import Request, urlopen


class ClientError(Exception):
    """The server refused a request (``status`` 4xx/5xx) or could not be reached (``status`` 0)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


class Client:
    """The operations of an imgsim server: searches, thumbnails, duplicates, clusters, explanations."""

    def __init__(self, url: str = "http://127.0.0.1:8600", token: str | None = None, timeout: float = 120.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    # --- transport ------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, params: dict | None = None, body: bytes | None = None,
                 content_type: str | None = None) -> tuple[bytes, str]:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        url = self.url + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type:
            headers["Content-Type"] = content_type
        try:
            with urlopen(Request(url, data=body, headers=headers, method=method), timeout=self.timeout) as response:
                return response.read(), response.headers.get("Content-Type", "")
        except HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode("utf-8", "replace")[:500] or exc.reason
            raise ClientError(exc.code, message) from None
        except URLError as exc:
            raise ClientError(0, f"Cannot reach {self.url}: {exc.reason}") from None

    def _json(self, method: str, path: str, params: dict | None = None, payload: dict | None = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        data, _ = self._request(method, path, params, body, "application/json" if body is not None else None)
        return json.loads(data)

    # --- operations -----------------------------------------------------------------------------------------

    def info(self) -> dict:
        """What the index holds, its capabilities (text, explain, clusters) and the server's limits."""
        return self._json("GET", "/v1/info")

    def similar(self, path: str, k: int = 5, deduplicate: float | None = None,
                max_distance: float | None = None) -> dict:
        """Neighbours of an indexed image (relative path): itself first at distance 0."""
        return self._json("GET", "/v1/similar", {"path": path, "k": k, "deduplicate": deduplicate,
                                                 "max_distance": max_distance})

    def search_text(self, text: str, k: int = 5, **filters: float) -> dict:
        """Images matching a description (CLIP indexes)."""
        return self._json("POST", "/v1/search", payload={"text": text, "k": k, **filters})

    def search_vector(self, vector: Sequence[float], k: int = 5, **filters: float) -> dict:
        """Neighbours of a vector of the index's length."""
        return self._json("POST", "/v1/search", payload={"vector": [float(v) for v in vector], "k": k, **filters})

    def more_like(self, positive: Sequence[str], negative: Sequence[str] = (), k: int = 5, **filters: float) -> dict:
        """More like these (relative paths), and not like those."""
        return self._json("POST", "/v1/search", payload={"positive": list(positive), "negative": list(negative),
                                                         "k": k, **filters})

    def search_image(self, image: bytes | str | os.PathLike, k: int = 5, **filters: float) -> dict:
        """Reverse image search with any image: its bytes, or a local file (uploaded; never a server path)."""
        data = image if isinstance(image, bytes) else Path(image).expanduser().read_bytes()
        boundary = uuid.uuid4().hex
        fields = {"k": k, **filters}
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                 for name, value in fields.items() if value is not None]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="query"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        raw, _ = self._request("POST", "/v1/search", body=body,
                               content_type=f"multipart/form-data; boundary={boundary}")
        return json.loads(raw)

    def thumbnail(self, path: str, size: int = 256) -> bytes:
        """A JPEG of an indexed image, longest side ``size``."""
        data, _ = self._request("GET", f"/v1/images/{quote(path)}/thumbnail", {"size": size})
        return data

    def duplicates(self, threshold: float) -> dict:
        """Groups of near-duplicate images within ``threshold`` (distance, 0..2)."""
        return self._json("GET", "/v1/duplicates", {"threshold": threshold})

    def clusters(self, k: int | None = None, central: int = 5) -> dict:
        """The collection in k albums (the suggested k when not given)."""
        return self._json("GET", "/v1/clusters", {"k": k, "central": central})

    def explain(self, a: str, b: str) -> dict:
        """Why two indexed images are similar, cell by cell of the 7x7 grid (ResNet50 indexes)."""
        return self._json("GET", "/v1/explain", {"a": a, "b": b})

    def thumbnail_url(self, path: str) -> str:
        """Where the thumbnail of an indexed image is served (the token is still needed to fetch it)."""
        return f"{self.url}/v1/images/{quote(path)}/thumbnail"

    # --- framework adapters (optional extras) ---------------------------------------------------------------

    def langchain_retriever(self, k: int = 5):
        """A LangChain ``BaseRetriever``: a text query returns one Document per image (page_content: the path;
        metadata: path, distance, similarity, thumbnail_url). Needs ``pip install langchain-core`` and a CLIP index."""
        from langchain_core.documents import Document
        from langchain_core.retrievers import BaseRetriever

        client = self

        class ImgsimRetriever(BaseRetriever):
            """Images of an imgsim collection that match a description."""

            top_k: int = k

            def _get_relevant_documents(self, query: str, *, run_manager=None) -> list:
                found = client.search_text(query, k=self.top_k)["neighbors"]
                return [Document(page_content=n["path"], metadata={**n, "thumbnail_url": client.thumbnail_url(n["path"])})
                        for n in found]

        return ImgsimRetriever()

    def llamaindex_retriever(self, k: int = 5):
        """A LlamaIndex ``BaseRetriever``: a text query returns ``NodeWithScore(ImageNode)`` per image, scored by
        cosine similarity. Needs ``pip install llama-index-core`` and a CLIP index."""
        from llama_index.core.retrievers import BaseRetriever
        from llama_index.core.schema import ImageNode, NodeWithScore

        client = self

        class ImgsimRetriever(BaseRetriever):
            """Images of an imgsim collection that match a description."""

            def _retrieve(self, query_bundle) -> list:
                found = client.search_text(query_bundle.query_str, k=k)["neighbors"]
                return [NodeWithScore(node=ImageNode(id_=n["path"], image_url=client.thumbnail_url(n["path"]),
                                                     metadata=n), score=n["similarity"]) for n in found]

        return ImgsimRetriever()
