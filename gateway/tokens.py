"""Offline token counting with tiktoken: estimates for budgets, and bills when usage is missing.

tiktoken downloads its encodings on first use unless ``TIKTOKEN_CACHE_DIR`` points at a folder
that holds them (files named by the SHA-1 of their download URL). litellm ships cl100k_base and
o200k_base in ``litellm/litellm_core_utils/tokenizers``, so we point tiktoken there and never touch
the network. Counts for models that are not OpenAI's are cl100k_base estimates.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tiktoken

__all__ = ["TokenCounter", "configure_offline_tiktoken", "litellm_tokenizers_dir"]

CL100K_BASE = "cl100k_base"
O200K_BASE = "o200k_base"
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")

# OpenAI's chat accounting (the openai-cookbook "How to count tokens" formula for gpt-3.5/4/4o):
# every message is wrapped in 3 tokens, a name costs 1 more, and the reply is primed with 3.
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_REPLY_PRIMING = 3
# A low-detail image is a flat 85 tokens; high-detail tiles depend on pixel sizes we do not fetch.
_TOKENS_PER_IMAGE = 85
_IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})

_Encode = Callable[[str], list[int]]


def litellm_tokenizers_dir() -> Path:
    """litellm's folder of tiktoken encodings, found without importing litellm (about 6 s)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "litellm is not installed, so its bundled tiktoken encodings cannot be used; install "
            "litellm or set TIKTOKEN_CACHE_DIR to a folder holding cl100k_base and o200k_base"
        )
    return Path(spec.submodule_search_locations[0]) / "litellm_core_utils" / "tokenizers"


def configure_offline_tiktoken() -> None:
    """Point ``TIKTOKEN_CACHE_DIR`` at litellm's bundled encodings, unless it is already set.

    Idempotent. An operator's own ``TIKTOKEN_CACHE_DIR`` is respected.
    """
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return
    os.environ["TIKTOKEN_CACHE_DIR"] = str(litellm_tokenizers_dir())


class TokenCounter:
    """Counts tokens of text and chat messages; encodings load lazily, once per name.

    Thread-safe: tiktoken's encoders are, and loading is guarded by a lock.
    """

    __slots__ = ("_encodings", "_lock")

    def __init__(self) -> None:
        self._encodings: dict[str, tiktoken.Encoding] = {}
        self._lock = threading.Lock()

    def encoding_name_for(self, model: str | None) -> str:
        """``o200k_base`` for the gpt-4o / gpt-4.1 / gpt-5 / o-series families, else cl100k_base."""
        if not model:
            return CL100K_BASE
        name = model.rpartition("/")[2].lower()  # "openai/gpt-4o" and "azure/gpt-4o" alike
        if name.startswith("ft:"):  # fine-tunes: "ft:gpt-4o-mini-2024-07-18:org::id"
            name = name[3:]
        return O200K_BASE if name.startswith(_O200K_PREFIXES) else CL100K_BASE

    def encoding(self, name: str) -> tiktoken.Encoding:
        """The tiktoken encoding ``name``, loaded from litellm's bundled files on first use."""
        encoding = self._encodings.get(name)
        if encoding is None:
            with self._lock:
                encoding = self._encodings.get(name)
                if encoding is None:
                    # Here rather than at import time so that importing this module has no side
                    # effects, yet a counter can never trigger a download.
                    configure_offline_tiktoken()
                    encoding = tiktoken.get_encoding(name)
                    # tiktoken keeps a Python dict of the ranks beside its Rust tables, read only
                    # to pickle the encoding (which nothing here does): about 40 MB of resident
                    # memory for cl100k_base and o200k_base together.
                    encoding._mergeable_ranks = {}
                    self._encodings[name] = encoding
        return encoding

    def count_text(self, text: str, model: str | None = None) -> int:
        if not text:
            return 0
        # encode_ordinary: user text containing "<|endoftext|>" is counted as text instead of
        # raising, and it skips tiktoken's special-token scan.
        return len(self.encoding(self.encoding_name_for(model)).encode_ordinary(text))

    def count_messages(
        self, messages: Sequence[Mapping[str, Any]], model: str | None = None
    ) -> int:
        """Prompt tokens of a chat request by OpenAI's formula (an estimate for other models).

        Counts every string field (role, content, name, tool_call_id...), text content parts,
        images at a flat 85 tokens, and the function name and arguments of assistant tool calls.
        """
        encode = self.encoding(self.encoding_name_for(model)).encode_ordinary
        total = _REPLY_PRIMING
        for message in messages:
            total += _TOKENS_PER_MESSAGE
            for key, value in message.items():
                if isinstance(value, str):
                    if value:
                        total += len(encode(value))
                    if key == "name":
                        total += _TOKENS_PER_NAME
                elif not value:
                    continue
                elif key == "content":
                    total += _count_parts(value, encode)
                elif key == "tool_calls":
                    for call in value:
                        total += _count_function(call.get("function"), encode)
                elif key == "function_call":  # the legacy single-function form
                    total += _count_function(value, encode)
        return total


def _count_parts(parts: Any, encode: _Encode) -> int:
    total = 0
    for part in parts:
        if isinstance(part, str):
            total += len(encode(part))
            continue
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind in _IMAGE_PART_TYPES:
            total += _TOKENS_PER_IMAGE
        elif kind == "text":
            text = part.get("text")
            if isinstance(text, str):
                total += len(encode(text))
        else:
            # input_text, refusal and part types we do not know yet: their text is in string
            # values; nested objects (audio data, files) are not text and are not counted.
            for field, value in part.items():
                if field != "type" and isinstance(value, str) and value:
                    total += len(encode(value))
    return total


def _count_function(function: Any, encode: _Encode) -> int:
    if not isinstance(function, Mapping):
        return 0
    total = 0
    name = function.get("name")
    if isinstance(name, str) and name:
        total += len(encode(name))
    arguments = function.get("arguments")
    if arguments is not None and not isinstance(arguments, str):
        # Some clients send arguments as an object; the model saw it as JSON text.
        arguments = json.dumps(arguments, ensure_ascii=False)
    if arguments:
        total += len(encode(arguments))
    return total
