"""Decoding a client's JSON body: every way a body can be broken is a 400 that says which.

msgspec reports most broken bodies as ``DecodeError``, but not all of them: bytes that are not
UTF-8 inside a string raise ``UnicodeDecodeError`` and arrays or objects nested past its limit
raise ``RecursionError``. Left alone those would reach the generic 500 handler. NUL characters
(``\\u0000``) decode fine but mean nothing to a model and cut C-string based tools (llama.cpp,
log shippers) short, so they are refused here too, with where they were found.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.errors import InvalidRequest

__all__ = ["decode_json_body", "nul_path"]

_decode = msgspec.json.Decoder().decode
_NUL_ESCAPE = b"\\u0000"


def decode_json_body(body: bytes) -> Any:
    """The JSON value of ``body``; ``InvalidRequest`` (400) for anything that is not clean JSON."""
    try:
        value = _decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid UTF-8 (byte {exc.start}): send JSON encoded as UTF-8."
        ) from exc
    except RecursionError as exc:
        raise InvalidRequest(
            "The request body nests arrays or objects too deeply to be a chat request."
        ) from exc
    # A NUL can only arrive escaped (a raw one is already a DecodeError): look for it only then.
    if _NUL_ESCAPE in body:
        where = nul_path(value)
        if where is not None:
            # A NUL in a key: show it escaped; a generated key can be long: show its start.
            where = where.replace("\x00", "\\u0000")[:200]
            raise InvalidRequest(
                f"The request contains a NUL character (\\u0000) at `{where or '$'}`; "
                "remove it from the text.",
                param=where or None,
            )
    return value


def nul_path(value: Any) -> str | None:
    """The path (``messages[0].content``) of a string or key holding a NUL, or None.

    Iterative: the value may nest as deep as the decoder allows, deeper than Python's stack."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                step = f"{path}.{key}" if path else str(key)
                if "\x00" in key:
                    return step
                stack.append((step, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in reversed(list(enumerate(item))))
    return None
