"""Request bodies and error answers in the published OpenAPI document (``/schema/openapi.json``).

The handlers read their bodies themselves (a chat body is forwarded as the client sent it,
unknown fields included), so Litestar sees no ``data`` parameter to describe. Each such route
names its body here instead. The chat body's schema is the one msgspec derives from
``gateway.chat.ChatRequest``, the struct requests are validated with, so the document cannot
drift from what the gateway accepts. Every error answer is documented as OpenAI's error body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi.spec import Operation

from gateway.chat import CONTENT_PART_TYPES, ChatRequest

__all__ = [
    "CHAT_BODY",
    "COMPLETIONS_BODY",
    "EMBEDDINGS_BODY",
    "ERROR_BODY",
    "described",
    "inline_schema",
]

JsonSchema = dict[str, Any]


def inline_schema(struct: type[msgspec.Struct]) -> JsonSchema:
    """msgspec's JSON Schema of ``struct`` with its ``$defs`` inlined (the structs here are not
    recursive), so an operation can carry it without touching the document's components."""
    document = msgspec.json.schema(struct)
    defs: dict[str, JsonSchema] = document.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: JsonSchema = resolve(document)
    return resolved


def _content_parts() -> JsonSchema:
    return {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"type": {"enum": sorted(CONTENT_PART_TYPES)}},
            "required": ["type"],
        },
    }


def _chat_body() -> JsonSchema:
    schema = inline_schema(ChatRequest)
    message = schema["properties"]["messages"]["items"]
    # The struct keeps parts as plain objects (they are forwarded as sent); the document names
    # the part types the gateway accepts.
    message["properties"]["content"] = {
        "anyOf": [{"type": "string"}, _content_parts(), {"type": "null"}]
    }
    schema["description"] = (
        "An OpenAI chat completion request. Fields not listed are forwarded to the model as sent."
    )
    return schema


_TEXT_OR_TEXTS: JsonSchema = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2048},
    ]
}

CHAT_BODY: JsonSchema = _chat_body()

EMBEDDINGS_BODY: JsonSchema = {
    "type": "object",
    "properties": {"model": {"type": "string", "minLength": 1}, "input": _TEXT_OR_TEXTS},
    "required": ["model", "input"],
}

COMPLETIONS_BODY: JsonSchema = {
    "type": "object",
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "prompt": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1},
            ]
        },
        "max_tokens": {"type": "integer", "minimum": 1},
        "stream": {"type": "boolean"},
    },
    "required": ["model", "prompt"],
}

ERROR_BODY: JsonSchema = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "code": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
            "required": ["message", "type", "param", "code"],
        }
    },
    "required": ["error"],
}


def described(
    body: JsonSchema | None = None, *, description: str = "", query: tuple[str, ...] = ()
) -> type[Operation]:
    """An ``operation_class`` for a route whose handler reads its JSON ``body`` and its ``query``
    parameters (all optional strings) itself; its errors are documented as OpenAI error bodies."""

    @dataclass
    class DescribedOperation(Operation):
        def to_schema(self) -> dict[str, Any]:
            document = super().to_schema()
            if body is not None:
                document["requestBody"] = {
                    "description": description,
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                }
            if query:
                document["parameters"] = [
                    *document.get("parameters", []),
                    *(
                        {
                            "name": name,
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                        }
                        for name in query
                    ),
                ]
            document.setdefault("responses", {})["default"] = {
                "description": "An error, as OpenAI's error body",
                "content": {"application/json": {"schema": ERROR_BODY}},
            }
            return document

    return DescribedOperation
