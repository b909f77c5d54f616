"""Restoring placeholders in answers, whole and streamed chunk by chunk."""

from __future__ import annotations

import pytest

from gateway.safety import Masker, Restorer, restore

PLACEHOLDERS = {
    "[PHONE_1]": "13812345678",
    "[PHONE_10]": "+44 20 7946 0958",
    "[EMAIL_1]": "mia@example.com",
}


def stream(chunks: list[str], placeholders: dict[str, str] = PLACEHOLDERS) -> list[str]:
    restorer = Restorer(placeholders)
    out = [restorer.feed(chunk) for chunk in chunks]
    out.append(restorer.flush())
    return out


def test_restore_puts_back_only_this_requests_placeholders() -> None:
    text = "Call [PHONE_1] or write to [EMAIL_1]; [PHONE_2] and [note] stay."
    assert restore(text, PLACEHOLDERS) == (
        "Call 13812345678 or write to mia@example.com; [PHONE_2] and [note] stay."
    )
    assert restore(text, {}) == text


@pytest.mark.parametrize(
    "chunks",
    [
        ["We will call [PHO", "NE_1] today."],  # split in two
        ["We will call [", "PHONE", "_1] today."],  # split in three
        ["We will call [PHONE_", "1", "] today."],
        ["We will call ", "[PHONE_1]", " today."],
        ["We will call [PHONE_1] today."],
    ],
)
def test_a_placeholder_split_across_chunks_is_restored(chunks: list[str]) -> None:
    assert "".join(stream(chunks)) == "We will call 13812345678 today."


def test_only_a_possible_placeholder_prefix_is_held_back() -> None:
    restorer = Restorer(PLACEHOLDERS)
    assert restorer.feed("Your number [PHO") == "Your number "
    assert restorer.feed("NE_1] is saved. [see") == "13812345678 is saved. [see"
    assert restorer.feed(" note] ok") == " note] ok"
    assert restorer.flush() == ""


def test_a_longer_placeholder_sharing_a_prefix_waits_for_its_end() -> None:
    assert stream(["Dial [PHONE_1", "0] now"]) == ["Dial ", "+44 20 7946 0958 now", ""]
    assert stream(["Dial [PHONE_1", "] now"]) == ["Dial ", "13812345678 now", ""]


def test_a_stream_ending_inside_a_placeholder_prefix_flushes_it_verbatim() -> None:
    assert stream(["Contact [EMA"]) == ["Contact ", "[EMA"]


def test_without_placeholders_deltas_pass_straight_through() -> None:
    assert stream(["[PHO", "NE_1]"], {}) == ["[PHO", "NE_1]", ""]


def test_a_customer_typed_placeholder_survives_a_streamed_round_trip() -> None:
    text = "My SMS says [PHONE_1] but my number is 13812345678"
    masked = Masker().mask(text)
    assert masked.text == "My SMS says [PHONE_1] but my number is [PHONE_2]"
    answer = "You wrote [PHONE_1]; we will call [PHONE_2]."
    chunks = [answer[i : i + 3] for i in range(0, len(answer), 3)]
    restorer = Restorer(masked.placeholders)
    streamed = "".join(restorer.feed(c) for c in chunks) + restorer.flush()
    assert streamed == "You wrote [PHONE_1]; we will call 13812345678."


def test_every_split_point_of_an_answer_restores_the_same() -> None:
    answer = "Hi! [EMAIL_1] and [PHONE_10] / [PHONE_1]. [X_1]"
    whole = restore(answer, PLACEHOLDERS)
    for i in range(len(answer) + 1):
        for j in range(i, len(answer) + 1):
            assert "".join(stream([answer[:i], answer[i:j], answer[j:]])) == whole
