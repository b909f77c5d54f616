"""The spec validator catches what real clients trip on, and accepts what OpenAI really sends."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.support.openai_spec import (
    REQUIRE_ENV,
    SPEC_ENV,
    SpecValidator,
    SpecViolation,
    require_spec,
    rewrite_nullable,
)

GOOD_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
    }


def sse(*events: str) -> str:
    return "".join(f"{event}\n\n" for event in events)


GOOD_STREAM = sse(
    ": ping",
    'data: {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", '
    '"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, '
    '"logprobs": null, "finish_reason": null}], "usage": null}',
    'data: {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", '
    '"choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}], '
    '"usage": null}',
    'data: {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", '
    '"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}',
    "data: [DONE]",
)


@pytest.fixture(scope="module")
def spec() -> SpecValidator:
    return require_spec()


# ----------------------------------------------------------------- rewrite_nullable


def test_nullable_type_becomes_any_of_with_null_keeping_annotations_outside() -> None:
    node = {"type": "string", "description": "why", "default": "x", "nullable": True}
    rewritten, count = rewrite_nullable(node)
    assert count == 1
    assert rewritten == {
        "description": "why",
        "default": "x",
        "anyOf": [{"type": "string"}, {"type": "null"}],
    }


def test_nullable_ref_and_all_of_are_wrapped_whole() -> None:
    ref = {"$ref": "#/components/schemas/CompletionUsage", "nullable": True}
    all_of = {"allOf": [{"$ref": "#/a"}, {"$ref": "#/b"}], "nullable": True}
    assert rewrite_nullable(ref)[0] == {
        "anyOf": [{"$ref": "#/components/schemas/CompletionUsage"}, {"type": "null"}]
    }
    assert rewrite_nullable(all_of)[0] == {
        "anyOf": [{"allOf": [{"$ref": "#/a"}, {"$ref": "#/b"}]}, {"type": "null"}]
    }


def test_nullable_false_is_dropped_and_a_property_named_nullable_survives() -> None:
    node = {
        "type": "object",
        "nullable": False,
        "properties": {"nullable": {"type": "boolean", "nullable": True}},
    }
    rewritten, count = rewrite_nullable(node)
    assert count == 1
    assert rewritten == {
        "type": "object",
        "properties": {"nullable": {"anyOf": [{"type": "boolean"}, {"type": "null"}]}},
    }


def test_rewrite_does_not_modify_its_input() -> None:
    node = {"properties": {"a": {"type": "integer", "nullable": True}}}
    before = copy.deepcopy(node)
    rewrite_nullable(node)
    assert node == before


# ----------------------------------------------------------------- require_spec


def test_missing_spec_skips_naming_the_path_and_the_env_var(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.json"
    monkeypatch.setenv(SPEC_ENV, str(missing))
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception) as info:
        require_spec()
    assert str(missing) in str(info.value)
    assert SPEC_ENV in str(info.value)


def test_missing_spec_fails_when_the_spec_is_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(SPEC_ENV, str(tmp_path / "nowhere.json"))
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=SPEC_ENV):
        require_spec()


# ----------------------------------------------------------------- validate


def test_every_schema_the_gateway_serves_exists(spec: SpecValidator) -> None:
    for name in (
        "CreateChatCompletionResponse",
        "CreateChatCompletionStreamResponse",
        "ListModelsResponse",
        "Model",
        "ErrorResponse",
    ):
        spec.validator(name)
    assert spec.nullable_rewrites > 100


def test_known_good_chat_completion_passes(spec: SpecValidator) -> None:
    spec.validate("CreateChatCompletionResponse", GOOD_COMPLETION)


def test_null_choices_fail_with_the_path_named(spec: SpecValidator) -> None:
    bad = {**GOOD_COMPLETION, "choices": None}
    with pytest.raises(SpecViolation, match=r"\$\.choices: None is not of type 'array'"):
        spec.validate("CreateChatCompletionResponse", bad)


def test_every_violation_is_listed(spec: SpecValidator) -> None:
    bad = copy.deepcopy(GOOD_COMPLETION)
    del bad["choices"][0]["message"]["refusal"]
    bad["created"] = "yesterday"
    with pytest.raises(SpecViolation) as info:
        spec.validate("CreateChatCompletionResponse", bad)
    message = str(info.value)
    assert "2 violation(s)" in message
    assert "$.created" in message
    assert "$.choices[0].message: 'refusal' is a required property" in message


def test_chunk_with_null_usage_passes_thanks_to_the_nullable_rewrite(spec: SpecValidator) -> None:
    spec.validate("CreateChatCompletionStreamResponse", chunk({"content": "Hi"}))


def test_unknown_schema_name_suggests_close_names(spec: SpecValidator) -> None:
    with pytest.raises(KeyError, match="CreateChatCompletionResponse"):
        spec.validate("ChatCompletionResponse", {})


# ----------------------------------------------------------------- validate_sse


def test_good_stream_passes_and_returns_the_chunks(spec: SpecValidator) -> None:
    chunks = spec.validate_sse(GOOD_STREAM.encode())
    assert len(chunks) == 3
    assert chunks[-1]["choices"] == []


def test_stream_without_done_fails(spec: SpecValidator) -> None:
    body = GOOD_STREAM.replace("data: [DONE]\n\n", "")
    with pytest.raises(SpecViolation, match=r"does not end with `data: \[DONE\]`"):
        spec.validate_sse(body)


def test_stream_with_an_empty_data_line_fails(spec: SpecValidator) -> None:
    body = sse("data: ", "data: [DONE]")
    with pytest.raises(SpecViolation, match="not JSON"):
        spec.validate_sse(body)


def test_stream_with_a_non_data_line_fails(spec: SpecValidator) -> None:
    body = sse("event: message\ndata: {}", "data: [DONE]")
    with pytest.raises(SpecViolation, match="non-data lines"):
        spec.validate_sse(body)


def test_stream_chunks_are_validated_against_the_schema(spec: SpecValidator) -> None:
    body = sse('data: {"id": "c", "object": "chat.completion.chunk"}', "data: [DONE]")
    with pytest.raises(SpecViolation, match="'choices' is a required property"):
        spec.validate_sse(body)


def test_mid_stream_error_event_is_validated_as_error_response(spec: SpecValidator) -> None:
    good = sse(
        'data: {"error": {"message": "upstream died", "type": "server_error", '
        '"param": null, "code": null}}',
        "data: [DONE]",
    )
    assert spec.validate_sse(good)[0]["error"]["type"] == "server_error"
    bad = sse('data: {"error": {"message": "upstream died"}}', "data: [DONE]")
    with pytest.raises(SpecViolation, match=r"ErrorResponse\) \$\.error: 'code'"):
        spec.validate_sse(bad)
