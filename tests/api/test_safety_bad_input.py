"""Bad and odd input for masking and handoff through a real gateway: a customer who types a
placeholder where another customer had a number, empty and blank turns, turns without text,
mixed Chinese and English (the cases tests/api/test_safety.py does not already cover)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.test_safety import SAFETY_CONFIG, chat, streamed_text
from tests.conftest import ledger_record
from tests.support.gateway_server import ACME_KEY, GatewayServer, gateway_env
from tests.support.mock_upstream import MockUpstream, Reply

PHONE = "13912345678"


@pytest.fixture(scope="module")
def gateway(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    # acme masks and hands off to the large tier; the cache is on and keeps personal requests.
    data_dir = tmp_path_factory.mktemp("safety-bad-input")
    env = gateway_env(mock_upstream.base_url, ACME_MASK_SECRET="acme-secret-" + "1" * 32)
    with GatewayServer(data_dir, env, SAFETY_CONFIG) as server:
        yield server


def content(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def test_a_typed_placeholder_never_gets_another_customers_number(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    # The first customer's request leaves, and is cached, as "... [PHONE_1] ..."; the second
    # customer writes exactly that text. Same masked text, but not the same request.
    first = chat(gateway, [{"role": "user", "content": f"Please text me on {PHONE} today"}])
    typed = [{"role": "user", "content": "Please text me on [PHONE_1] today"}]
    second = chat(gateway, typed)
    again = chat(gateway, typed)
    streamed = chat(gateway, typed, stream=True)

    assert content(first) == f"echo: Please text me on {PHONE} today"
    for response in (second, again):
        assert content(response) == "echo: Please text me on [PHONE_1] today"
        assert "x-switchboard-masked" not in response.headers  # nothing of theirs was masked
    assert [first.headers["x-switchboard-cache"], second.headers["x-switchboard-cache"]] == [
        "miss",
        "miss",
    ]
    assert again.headers["x-switchboard-cache"] == "hit"  # their own entry, not the first's
    assert PHONE not in streamed.text
    assert streamed_text(streamed) == "echo: Please text me on [PHONE_1] today"


def test_an_upstream_answer_naming_a_placeholder_the_request_never_had_is_left_alone(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    # A confused model invents [PHONE_2]; only this request's own placeholders are restored.
    upstream.enqueue(Reply("We called [PHONE_1] and [PHONE_2]."))

    response = chat(gateway, [{"role": "user", "content": f"call {PHONE} please, not before 9"}])

    assert content(response) == f"We called {PHONE} and [PHONE_2]."


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": ""}],
        [{"role": "user", "content": "   \n\t"}],
        [{"role": "user", "content": []}],
        [{"role": "user", "content": [{"type": "text", "text": ""}]}],
        [{"role": "system", "content": "转人工"}, {"role": "user", "content": ""}],
        [{"role": "assistant", "content": "How can I help?"}, {"role": "user", "content": "ok"}],
    ],
)
def test_empty_and_blank_turns_raise_no_handoff_and_are_answered(
    gateway: GatewayServer, upstream: MockUpstream, messages: list[dict[str, Any]]
) -> None:
    response = chat(gateway, messages)

    assert response.status_code == 200, response.text
    assert "x-switchboard-handoff" not in response.headers
    record = ledger_record(gateway, response.headers["x-switchboard-request-id"])
    assert record.handoff is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("please 转人工, 我等了很久了", "human_request"),
        ("我要 talk to a human，快点", "human_request"),
        (f"I will 投诉到消协 if you do not call {PHONE} back", "legal_threat"),
    ],
)
def test_mixed_language_handoffs_are_flagged_and_their_numbers_still_masked(
    gateway: GatewayServer, upstream: MockUpstream, text: str, reason: str
) -> None:
    response = chat(gateway, [{"role": "user", "content": text}], model="auto")

    assert response.headers["x-switchboard-handoff"] == reason
    assert response.headers["x-switchboard-route"] == "large"  # acme's action: large
    assert content(response) == "echo: " + text
    assert PHONE not in str(upstream.history[-1].json)


def test_a_handoff_and_a_typed_placeholder_in_one_long_mixed_message(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    text = ("我的订单还没到 where is it? " * 400) + f"转人工! my SMS shows [PHONE_1], call {PHONE}"

    response = chat(gateway, [{"role": "user", "content": text}], model="auto", key=ACME_KEY)

    assert response.headers["x-switchboard-handoff"] == "human_request"
    assert content(response) == "echo: " + text
    sent = upstream.history[-1].json["messages"][0]["content"]
    assert sent.endswith("my SMS shows [PHONE_1], call [PHONE_2]")
