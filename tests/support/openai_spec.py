"""Validate raw gateway responses against OpenAI's published OpenAPI document.

Why raw validation: openai-python tolerates a lot (missing fields become ``None``), so a response
that a client happens to parse can still break stricter clients. The spec is the contract.

The document is OpenAPI 3.1 but still carries OpenAPI 3.0 ``nullable: true`` keywords, which JSON
Schema 2020-12 ignores: without a rewrite, ``"usage": null`` on every normal stream chunk fails.
:func:`rewrite_nullable` turns each such node into ``anyOf: [<node>, {"type": "null"}]``. Component
schemas are validated one by one; the document as a whole has errors of its own.

Where the spec lives: ``$SWITCHBOARD_OPENAI_SPEC``, else ``<repo>/../shared/openai/openapi.json``.
Tests call :func:`require_spec`, which skips when the file is missing (fails instead when
``SWITCHBOARD_REQUIRE_SPEC=1``, as CI sets it).
"""

from __future__ import annotations

import difflib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = [
    "SpecValidator",
    "SpecViolation",
    "require_spec",
    "rewrite_nullable",
    "spec_path",
]

SPEC_ENV = "SWITCHBOARD_OPENAI_SPEC"
REQUIRE_ENV = "SWITCHBOARD_REQUIRE_SPEC"
ERROR_SCHEMA = "ErrorResponse"
STREAM_SCHEMA = "CreateChatCompletionStreamResponse"

_SPEC_URI = "urn:switchboard:openai-openapi"
# Keywords that describe rather than constrain; they stay on the outer node after a rewrite so
# error messages and defaults read the same as in the spec.
_ANNOTATIONS = frozenset(
    {"title", "description", "default", "example", "examples", "deprecated", "readOnly"}
)
_MAX_INSTANCE_REPR = 160


class SpecViolation(AssertionError):
    """A response does not match the OpenAI spec; the message lists every error with its path."""


def default_spec_path() -> Path:
    """Where the spec is expected when ``$SWITCHBOARD_OPENAI_SPEC`` is not set."""
    repo_root = Path(__file__).resolve().parents[2]
    return repo_root.parent / "shared" / "openai" / "openapi.json"


def spec_path() -> Path | None:
    """The spec file to use, or ``None`` when it does not exist."""
    override = os.environ.get(SPEC_ENV)
    path = Path(override) if override else default_spec_path()
    return path if path.is_file() else None


def rewrite_nullable(node: Any) -> tuple[Any, int]:
    """Return a copy of ``node`` with OpenAPI 3.0 ``nullable`` turned into JSON Schema, and a count.

    ``{"type": "string", "nullable": true}`` becomes
    ``{"anyOf": [{"type": "string"}, {"type": "null"}]}``; ``$ref`` and ``allOf`` nodes are wrapped
    whole the same way. ``nullable: false`` is dropped. Only a boolean ``nullable`` is touched, so a
    property *named* ``nullable`` (whose value is a schema) survives.
    """
    count = 0

    def walk(value: Any) -> Any:
        nonlocal count
        if isinstance(value, list):
            return [walk(item) for item in value]
        if not isinstance(value, dict):
            return value
        out = {key: walk(item) for key, item in value.items()}
        nullable = out.get("nullable")
        if not isinstance(nullable, bool):
            return out
        del out["nullable"]
        if not nullable:
            return out
        count += 1
        outer = {key: item for key, item in out.items() if key in _ANNOTATIONS}
        inner = {key: item for key, item in out.items() if key not in _ANNOTATIONS}
        if inner:  # an empty schema already accepts null
            outer["anyOf"] = [inner, {"type": "null"}]
        return outer

    return walk(node), count


def _short(instance: object) -> str:
    text = json.dumps(instance, default=repr)
    return text if len(text) <= _MAX_INSTANCE_REPR else text[: _MAX_INSTANCE_REPR - 3] + "..."


class SpecValidator:
    """Validators for the spec's component schemas, built lazily and cached per schema name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        document = json.loads(path.read_text(encoding="utf-8"))
        document, self.nullable_rewrites = rewrite_nullable(document)
        self.schemas: dict[str, Any] = document["components"]["schemas"]
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(_SPEC_URI, resource)
        self._validators: dict[str, Draft202012Validator] = {}

    def validator(self, schema_name: str) -> Draft202012Validator:
        """The validator for ``#/components/schemas/<schema_name>``."""
        found = self._validators.get(schema_name)
        if found is not None:
            return found
        if schema_name not in self.schemas:
            close = difflib.get_close_matches(schema_name, self.schemas, n=5)
            hint = f"; did you mean one of {close}?" if close else ""
            raise KeyError(f"{schema_name!r} is not a schema in {self.path}{hint}")
        schema = {"$ref": f"{_SPEC_URI}#/components/schemas/{schema_name}"}
        found = Draft202012Validator(schema, registry=self._registry)
        self._validators[schema_name] = found
        return found

    def errors(self, schema_name: str, instance: object) -> list[str]:
        """Every violation as ``"<json path>: <message>"``, in document order."""
        found = self.validator(schema_name).iter_errors(instance)
        lines = []
        for error in sorted(found, key=lambda e: [str(p) for p in e.absolute_path]):
            message = error.message
            if len(message) > 2 * _MAX_INSTANCE_REPR:
                message = f"{_short(error.instance)} fails {error.validator!r}"
            lines.append(f"{error.json_path}: {message}")
        return lines

    def validate(self, schema_name: str, instance: object) -> None:
        """Raise :class:`SpecViolation` unless ``instance`` matches the named schema."""
        problems = self.errors(schema_name, instance)
        if problems:
            listing = "\n  ".join(problems)
            raise SpecViolation(
                f"{len(problems)} violation(s) of {schema_name}:\n  {listing}\n"
                f"instance: {_short(instance)}"
            )

    def validate_sse(
        self, body: str | bytes, *, schema_name: str = STREAM_SCHEMA
    ) -> list[dict[str, Any]]:
        """Check an SSE body as OpenAI streams it and return the decoded JSON events.

        Every event must be ``data:`` lines (``:`` comments, i.e. keep-alives, are skipped), end
        with a blank line, and the last one must be ``data: [DONE]``. Each other event must be JSON
        matching ``schema_name``, or an ``{"error": ...}`` event matching ``ErrorResponse``.
        Returns every decoded event except ``[DONE]``, error events included.
        """
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        text = text.replace("\r\n", "\n")
        problems: list[str] = []
        if text and not text.endswith("\n\n"):
            problems.append("the body does not end with a blank line (last event unterminated)")
        datas: list[str] = []
        for number, block in enumerate(text.split("\n\n"), start=1):
            lines = [line for line in block.split("\n") if line and not line.startswith(":")]
            if not lines:
                continue
            bad = [line for line in lines if not line.startswith("data:")]
            if bad:
                problems.append(f"event {number}: non-data lines {bad!r}")
                continue
            datas.append("\n".join(line[5:].removeprefix(" ") for line in lines))

        if not datas or datas[-1] != "[DONE]":
            problems.append("the stream does not end with `data: [DONE]`")
        chunks: list[dict[str, Any]] = []
        for number, data in enumerate(datas, start=1):
            if data == "[DONE]":
                if number != len(datas):
                    problems.append(f"data event {number}: [DONE] before the end of the stream")
                continue
            try:
                chunk = json.loads(data)
            except ValueError as exc:
                problems.append(f"data event {number}: not JSON ({exc}): {data[:80]!r}")
                continue
            name = ERROR_SCHEMA if isinstance(chunk, dict) and "error" in chunk else schema_name
            problems.extend(f"data event {number} ({name}) {p}" for p in self.errors(name, chunk))
            chunks.append(chunk)
        if problems:
            listing = "\n  ".join(problems)
            raise SpecViolation(f"{len(problems)} problem(s) in the SSE body:\n  {listing}")
        return chunks


@cache
def _load(path: Path) -> SpecValidator:
    return SpecValidator(path)


def require_spec() -> SpecValidator:
    """The session-wide :class:`SpecValidator`; skips the test when the spec file is missing.

    With ``SWITCHBOARD_REQUIRE_SPEC=1`` a missing spec fails the test instead, so CI cannot go
    green by skipping every wire-format check.
    """
    path = spec_path()
    if path is None:
        where = os.environ.get(SPEC_ENV) or str(default_spec_path())
        reason = (
            f"OpenAI spec not found at {where}: put openapi.json there or point {SPEC_ENV} at it"
        )
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1 makes this an error)")
        pytest.skip(reason)
    return _load(path)
