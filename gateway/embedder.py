"""Sentence vectors for the answer cache, computed in-process and offline.

The default is WordLlama (``l2_supercat``, 256 dimensions): a static token-embedding table whose
weights ship inside the ``wordllama`` wheel, so loading reads the package folder and never the
network (``disable_download=True``: a missing file is an error, not a download). A vector is the
mean of the text's token vectors, unit-normalised, so a dot product is a cosine. It costs tens of
microseconds per text, which is what lets a cache lookup stay under a millisecond or two.

Chinese words of a customer-service glossary are put in English before tokenizing
(:func:`gateway.gloss.gloss`): WordLlama's tokenizer splits Chinese characters into bytes, so
without it 运费 and 邮费 (both "shipping fee") or 快递到哪了 and "where is my parcel" hardly meet.

Any other model can stand in through the :class:`Embedder` protocol (a hosted embedding model
through ``/v1/embeddings``, say); the cache only needs ``dim``, ``name`` and ``embed``.
"""

from __future__ import annotations

import importlib
import logging
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from gateway.gloss import GLOSS_VERSION, gloss

Vector = npt.NDArray[np.float32]

__all__ = ["Embedder", "EmbedderUnavailable", "Vector", "WordLlamaEmbedder", "default_embedder"]


class EmbedderUnavailable(RuntimeError):
    """The embedding model cannot be loaded (package missing, weights missing)."""


class Embedder(Protocol):
    """Text → unit-length float32 vector of ``dim`` values."""

    name: str
    dim: int

    def embed(self, text: str) -> Vector:
        """One text's unit vector (all zeros for a text with no tokens)."""
        ...

    def embed_many(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Several texts' unit vectors, one per row."""
        ...


class WordLlamaEmbedder:
    """WordLlama's embedding table and tokenizer, pooled here rather than through its
    ``embed``: one text at a time without padding is about four times faster (the hot path
    embeds one text per request)."""

    def __init__(
        self, table: npt.NDArray[np.float32], tokenizer: Any, name: str, *, glossed: bool = True
    ) -> None:
        self._table = np.ascontiguousarray(table, dtype=np.float32)
        self._tokenizer = tokenizer
        self._glossed = glossed
        # The glossary is part of the name: a model or cache entry embedded with another
        # glossary (or none) is told apart by it.
        self.name = f"{name}+gloss-{GLOSS_VERSION}" if glossed else name
        self.dim = int(self._table.shape[1])

    @classmethod
    def load(
        cls, config: str = "l2_supercat", dim: int = 256, *, glossed: bool = True
    ) -> WordLlamaEmbedder:
        """Load the weights shipped in the wordllama package; never downloads. ``glossed``:
        Chinese glossary words are embedded by their English meaning."""
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            wordllama: Any = importlib.import_module("wordllama")
        except ImportError as exc:
            raise EmbedderUnavailable(
                "the semantic cache's default embedder needs the wordllama package: "
                "`pip install wordllama` (it ships its weights; nothing is downloaded)"
            ) from exc
        finally:
            # wordllama.inference calls logging.basicConfig() at import: undo it, the gateway
            # configures its own logging.
            for handler in root.handlers[:]:
                if handler not in handlers:
                    root.removeHandler(handler)
            root.setLevel(level)
        folder = Path(wordllama.__file__).parent
        try:
            model = wordllama.WordLlama.load(
                config, cache_dir=folder, dim=dim, disable_download=True
            )
        except (FileNotFoundError, ValueError) as exc:
            raise EmbedderUnavailable(f"cannot load WordLlama {config}-{dim}: {exc}") from exc
        tokenizer = model.tokenizer
        tokenizer.no_padding()
        return cls(model.embedding, tokenizer, f"wordllama-{config}-{dim}", glossed=glossed)

    def _ids(self, text: str) -> list[int]:
        if self._glossed:
            text = gloss(text)
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False).ids
        return ids

    def embed(self, text: str) -> Vector:
        ids = self._ids(text)
        if not ids:
            return np.zeros(self.dim, dtype=np.float32)
        vector: Vector = self._table[ids].mean(axis=0)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    def embed_many(self, texts: list[str]) -> npt.NDArray[np.float32]:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = self.embed(text)
        return out


_default: WordLlamaEmbedder | None = None
_lock = threading.Lock()


def default_embedder() -> WordLlamaEmbedder:
    """The process-wide WordLlama embedder, loaded once (about 0.2 s, 16 MB)."""
    global _default
    with _lock:
        if _default is None:
            _default = WordLlamaEmbedder.load()
        return _default
