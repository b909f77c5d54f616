"""The masking and handoff stages' parts without a server: streamed restore with placeholders
split across chunks, tool-call arguments, what the cache may keep, keys, routing, config."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from gateway.cache.key import cache_key
from gateway.chat import parse_chat_request
from gateway.config import ConfigError, parse_config
from gateway.pipeline.context import RequestContext
from gateway.pipeline.masking import build_tenant_masking, mask_request
from gateway.pipeline.streaming import relay
from gateway.routing.policy import BudgetSignal, RouteRequest, RoutingState, decide
from gateway.safety import Masker
from gateway.safety.config import SafetyConfig
from gateway.tiers.base import TokenLogprob
from gateway.usage import Usage

MASKER = Masker(secret=b"k" * 32)
PHONE = "13812345678"
EMAIL = "li.wei@example.com"


def payload(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


class FakeStream:
    """A tier's stream that yields the given content pieces, then a finish chunk."""

    def __init__(self, pieces: list[str], *, finish: bool = True) -> None:
        self.model = "big"
        self.usage: Usage | None = None
        self.logprobs: list[TokenLogprob] = []
        self._pieces = pieces
        self._finish = finish

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[dict[str, Any]]:
        for piece in self._pieces:
            yield {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        if self._finish:
            yield {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}

    async def aclose(self) -> None:
        return None


def context(body: dict[str, Any], stream: FakeStream) -> RequestContext:
    async def read_body() -> bytes:
        return b""

    ctx = RequestContext(
        runtime=SimpleNamespace(),  # type: ignore[arg-type]
        request_id="r1",
        headers={},
        read_body=read_body,
    )
    ctx.request, ctx.payload = parse_chat_request(msgspec.json.encode(body))
    ctx.masking = mask_request(MASKER, frozenset(), ctx.payload)
    ctx.masking.answer_masked = True
    ctx.stream = stream
    return ctx


async def streamed(ctx: RequestContext) -> tuple[str, list[dict[str, Any]]]:
    chunks = [chunk async for chunk in relay(ctx)]
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )
    return text, chunks


@pytest.mark.parametrize(
    "pieces",
    [
        ["call [PHO", "NE_1] or write to [EMA", "IL_1]"],
        ["call [", "P", "H", "O", "N", "E", "_", "1", "]", " or write to [EMAIL_1", "]"],
        ["call [PHONE_1] or write to [EMAIL_1]"],
        ["call [PHONE_1]", " or write to [EMAIL_"],  # ends inside a placeholder: kept as it was
    ],
)
async def test_a_placeholder_split_across_chunks_comes_out_whole(pieces: list[str]) -> None:
    ctx = context(payload(f"my phone {PHONE}, mail {EMAIL}", stream=True), FakeStream(pieces))

    text, chunks = await streamed(ctx)

    expected = "".join(pieces).replace("[PHONE_1]", PHONE).replace("[EMAIL_1]", EMAIL)
    assert text == expected
    assert not any(
        "[PHO" in (c["choices"][0]["delta"].get("content") or "")
        for c in chunks
        if c.get("choices") and "[PHONE_1]" in "".join(pieces)
    )
    # The cache's copy is the masked text, as the upstream wrote it.
    assert "".join(ctx.streamed_text) == "".join(pieces)


async def test_a_stream_that_ends_without_a_finish_still_flushes_what_it_held() -> None:
    ctx = context(payload(f"my phone {PHONE}", stream=True), FakeStream(["ok [PHO"], finish=False))

    text, _ = await streamed(ctx)

    assert text == "ok [PHO"


def test_tool_call_arguments_are_restored_as_valid_json() -> None:
    masking = mask_request(MASKER, frozenset(), payload('my e-mail is "a\\b"@x.io? no: ' + EMAIL))
    body = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Updating [EMAIL_1]",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {
                                "name": "update",
                                "arguments": json.dumps({"email": "[EMAIL_1]"}),
                            },
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ]
    }

    masking.restore_body(body)

    message = body["choices"][0]["message"]
    assert message["content"] == f"Updating {EMAIL}"
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"email": EMAIL}


def test_the_cache_keeps_only_the_masked_form_of_an_answer() -> None:
    masking = mask_request(MASKER, frozenset({"small"}), payload(f"call {PHONE}"))

    assert masking.storable(f"I will call {PHONE}") == "I will call [PHONE_1]"
    assert masking.storable("I will call [PHONE_1]") == "I will call [PHONE_1]"
    assert masking.storable("or call 13912345678") is None  # a value of nobody's request
    assert masking.masks("large") and not masking.masks("small")


def test_keys_differ_by_the_masked_values_and_hold_neither() -> None:
    one = mask_request(MASKER, frozenset(), payload(f"call {PHONE}"))
    other = mask_request(MASKER, frozenset(), payload("call 13912345678"))
    again = mask_request(MASKER, frozenset(), payload(f"call {PHONE}"))

    assert one.payload == other.payload  # the same masked text...
    keys = [cache_key("acme", m.payload, m.value_hashes) for m in (one, other, again)]
    assert keys[0] != keys[1] and keys[0] == keys[2]  # ...told apart by the keyed hashes
    plain = mask_request(MASKER, frozenset(), payload("how do I return shoes"))
    assert cache_key("acme", plain.payload, plain.value_hashes) == cache_key(
        "acme", payload("how do I return shoes")
    )  # nothing masked: the key of an unmasked request


def test_a_request_without_values_is_not_copied() -> None:
    original = payload("where is my parcel")
    assert mask_request(MASKER, frozenset(), original).payload is original


CONFIG = """
upstreams:
  local: { kind: openai, base_url: "http://127.0.0.1:1/v1", local: true }
  hosted: { base_url: "http://127.0.0.1:2/v1" }
tiers:
  small: { upstream: local, model: tiny, price: { input_usd_per_mtok: 0, output_usd_per_mtok: 0 } }
  large: { upstream: hosted, model: gpt-4o }
router: { default: small }
tenants:
  acme:
    keys: [{ env: K }]
    safety:
      masking: { enabled: true, secret_env: MASK_SECRET }
  globex:
    keys: [{ env: K }]
    safety:
      masking: { enabled: true, exempt_small_tier: false }
"""


def test_the_small_tier_is_exempt_only_when_local_and_configured() -> None:
    loaded = parse_config(CONFIG, env={"K": "k"})
    tenants = build_tenant_masking(loaded.config, {"MASK_SECRET": "s" * 32})

    assert tenants["acme"].exempt_tiers == frozenset({"small"})
    assert tenants["globex"].exempt_tiers == frozenset()
    hosted = parse_config(CONFIG.replace("local: true", "local: false"), env={"K": "k"})
    assert build_tenant_masking(hosted.config, {"MASK_SECRET": "s"})["acme"].exempt_tiers == (
        frozenset()
    )


def test_a_missing_secret_variable_is_named_with_the_fix() -> None:
    loaded = parse_config(CONFIG, env={"K": "k"})

    with pytest.raises(ValueError, match=r"safety\.masking\.secret_env: .*MASK_SECRET is not set"):
        build_tenant_masking(loaded.config, {})


@pytest.mark.parametrize(
    ("safety", "message"),
    [
        ("{ handoff: { enabled: true, action: answer } }", "action `answer` needs `answer`"),
        ("{ handoff: { action: send } }", "Invalid enum value 'send'"),
        ("{ masking: { secret_env: 'sk-live-123' } }", "is not an environment variable name"),
        ("{ masking: { enabled: true, typo: 1 } }", "unknown field `typo`"),
    ],
)
def test_safety_config_errors_name_the_path_and_the_fix(safety: str, message: str) -> None:
    text = CONFIG.split("  globex:")[0].replace(
        "    safety:\n      masking: { enabled: true, secret_env: MASK_SECRET }\n",
        f"    safety: {safety}\n",
    )
    with pytest.raises(ConfigError, match=message) as caught:
        parse_config(text, source="gw.yaml", env={"K": "k"})
    assert "$.tenants.acme.safety" in str(caught.value)


def test_handoff_to_large_needs_a_large_tier() -> None:
    text = CONFIG.split("  globex:")[0].replace(
        "      masking: { enabled: true, secret_env: MASK_SECRET }\n",
        "      handoff: { enabled: true, action: large }\n",
    ).replace("  large: { upstream: hosted, model: gpt-4o }\n", "")
    with pytest.raises(ConfigError, match=r"safety\.handoff\.action: `large` needs a large tier"):
        parse_config(text, source="gw.yaml", env={"K": "k"})


def test_a_handoff_escalation_wins_over_rules_pins_and_a_soft_budget() -> None:
    loaded = parse_config(CONFIG, env={"K": "k"})
    config = loaded.config
    state = RoutingState(available_tiers=frozenset({"small", "large"}))
    request = RouteRequest(requested_model="auto", prompt_tokens=5, last_user_text="x", turns=1)
    budget = BudgetSignal(downgrade_to="small", reason="soft limit")

    plain = decide(request, config.tenants["acme"], state, config, budget=budget)
    escalated = decide(
        request, config.tenants["acme"], state, config, budget=budget, escalate="handoff: anger"
    )
    only_small = decide(
        request,
        config.tenants["acme"],
        RoutingState(available_tiers=frozenset({"small"})),
        config,
        escalate="handoff: anger",
    )

    assert plain.route == "small"
    assert escalated.route == "large" and escalated.reasons[-1] == "handoff: anger; small -> large"
    assert only_small.route == "small" and "kept small" in only_small.reasons[-1]


def test_safety_is_off_by_default() -> None:
    safety = SafetyConfig()
    assert not safety.masking.enabled and not safety.handoff.enabled
    assert safety.handoff.action == "none"


class ToolCallStream(FakeStream):
    """Streams one tool call whose arguments arrive in pieces."""

    async def _chunks(self) -> AsyncIterator[dict[str, Any]]:
        for i, piece in enumerate(self._pieces):
            call: dict[str, Any] = {"index": 0, "function": {"arguments": piece}}
            if i == 0:
                call.update({"id": "c1", "type": "function"})
                call["function"]["name"] = "update"
            delta = {"tool_calls": [call]}
            yield {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        yield {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}


async def test_streamed_tool_call_arguments_are_restored_across_chunks() -> None:
    pieces = ['{"email": "[EMA', 'IL_1]", "phone": "[PHONE_', '1]"}']
    ctx = context(
        payload(f"mail {EMAIL}, phone {PHONE}", stream=True), ToolCallStream(pieces)
    )

    _, chunks = await streamed(ctx)

    arguments = "".join(
        call["function"].get("arguments") or ""
        for c in chunks
        for choice in c["choices"]
        for call in choice["delta"].get("tool_calls") or []
    )
    assert json.loads(arguments) == {"email": EMAIL, "phone": PHONE}
