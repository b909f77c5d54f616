"""Sentence vectors from a hosted or self-hosted embedding model, for the semantic cache.

``semantic_cache.embedder: embeddings`` sends the text to the model named in the config's
``embeddings:`` section (an OpenAI-compatible ``/v1/embeddings``: OpenAI, vLLM, Ollama, a
llama.cpp server, or a LiteLLM proxy in front of any other provider). The default stays the
offline WordLlama (``gateway.embedder``): a call over the network costs a round trip and money on
every request, so this is for teams whose own embedding model knows their languages better.

The cache calls :meth:`HttpEmbedder.embed` from a worker thread, so the client is synchronous
(httpx, already a dependency of the ``openai`` package). Errors raise :class:`EmbedderFailed`;
the semantic stage turns them into a miss, never into a failed request. The dimension is in the
config (``semantic_cache.embedding_dim``) rather than probed at start: a gateway must come up
while the embedding service is down, and a vector of another length is refused, not indexed.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from gateway.embedder import Vector

if TYPE_CHECKING:
    import httpx

__all__ = ["EmbedderFailed", "HttpEmbedder"]


class EmbedderFailed(RuntimeError):
    """The embedding service did not give a usable vector (unreachable, error, wrong shape)."""


class HttpEmbedder:
    """``POST {base_url}/embeddings`` with ``{"model", "input"}``; unit-normalised float32."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        dim: int,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 5.0,
        transport: httpx.BaseTransport | None = None,  # tests: an in-process transport
    ) -> None:
        self.model = model
        self.dim = dim
        # Part of the cache's namespace: entries embedded by another model are never compared.
        self.name = f"http:{model}:{dim}"
        self._url = base_url.rstrip("/") + "/embeddings"
        self._headers = dict(headers or {})
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._timeouts = (read_timeout_s, connect_timeout_s)
        self._transport = transport
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _http(self) -> httpx.Client:
        import httpx  # only gateways that use a remote embedder pay for the import

        with self._lock:  # created on first use, in whichever worker thread comes first
            if self._client is None:
                read, connect = self._timeouts
                self._client = httpx.Client(
                    timeout=httpx.Timeout(read, connect=connect),
                    headers=self._headers,
                    transport=self._transport,
                )
            return self._client

    def embed(self, text: str) -> Vector:
        vector: Vector = self.embed_many([text])[0]
        return vector

    def embed_many(self, texts: list[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        import httpx

        response: Any
        try:
            response = self._http().post(self._url, json={"model": self.model, "input": texts})
        except httpx.HTTPError as exc:
            raise EmbedderFailed(f"embedding request to {self._url} failed: {exc!r}") from exc
        if response.status_code != 200:
            raise EmbedderFailed(
                f"embedding request to {self._url} answered {response.status_code}: "
                f"{response.text[:200]}"
            )
        try:
            data = response.json()["data"]
            rows = sorted(data, key=lambda row: row.get("index", 0))
            matrix = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EmbedderFailed(f"unreadable embedding answer from {self._url}: {exc}") from exc
        if matrix.shape != (len(texts), self.dim):
            raise EmbedderFailed(
                f"{self.model} gave vectors of shape {matrix.shape}, expected "
                f"({len(texts)}, {self.dim}); set semantic_cache.embedding_dim to the model's "
                "dimension"
            )
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return np.ascontiguousarray(matrix / norms, dtype=np.float32)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
