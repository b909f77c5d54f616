"""Offline tiktoken counting: litellm's bundled encodings, OpenAI's chat formula, Chinese text."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import tiktoken
import tiktoken.load
from tiktoken_ext import openai_public  # type: ignore[import-untyped]

from gateway.tokens import TokenCounter, configure_offline_tiktoken, litellm_tokenizers_dir

_REPO_ROOT = Path(__file__).resolve().parents[2]
_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"


@pytest.fixture
def no_tiktoken_cache_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # setenv first so that monkeypatch remembers the original value (or its absence) and undoes
    # whatever configure_offline_tiktoken writes during the test.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "placeholder")
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


@pytest.mark.usefixtures("no_tiktoken_cache_env")
def test_configure_offline_tiktoken_points_at_litellms_bundled_encodings() -> None:
    configure_offline_tiktoken()
    cache_dir = Path(os.environ["TIKTOKEN_CACHE_DIR"])
    assert cache_dir == litellm_tokenizers_dir()
    assert cache_dir.is_dir()
    # tiktoken names cached files by the SHA-1 of the download URL.
    for name in ("cl100k_base", "o200k_base"):
        key = hashlib.sha1(_BLOB.format(name).encode()).hexdigest()
        assert (cache_dir / key).is_file(), f"{name} is missing from {cache_dir}"


@pytest.mark.usefixtures("no_tiktoken_cache_env")
def test_configure_offline_tiktoken_is_idempotent() -> None:
    configure_offline_tiktoken()
    first = os.environ["TIKTOKEN_CACHE_DIR"]
    configure_offline_tiktoken()
    assert os.environ["TIKTOKEN_CACHE_DIR"] == first


def test_configure_offline_tiktoken_respects_an_existing_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    configure_offline_tiktoken()
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path)


@pytest.mark.usefixtures("no_tiktoken_cache_env")
@pytest.mark.parametrize("encoding_name", ["cl100k_base", "o200k_base"])
def test_encodings_load_without_network_even_behind_a_dead_proxy(
    monkeypatch: pytest.MonkeyPatch, encoding_name: str
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")

    def no_download(blobpath: str) -> bytes:
        raise AssertionError(f"tiktoken tried to download {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_download)
    configure_offline_tiktoken()
    # Built from its constructor, not tiktoken's registry, so the file is really read here even
    # if an earlier test already loaded this encoding into the process.
    encoding = tiktoken.Encoding(**getattr(openai_public, encoding_name)())
    assert len(encoding.encode_ordinary("hello world")) == 2
    assert encoding.decode(encoding.encode_ordinary("订单号 88231")) == "订单号 88231"


def test_a_fresh_process_counts_tokens_offline_without_any_setup(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import os, tiktoken.load
        def no_download(blobpath):
            raise AssertionError("tiktoken tried to download " + blobpath)
        tiktoken.load.read_file = no_download
        from gateway.tokens import TokenCounter, litellm_tokenizers_dir
        counter = TokenCounter()
        assert counter.count_text("hello world") == 2
        assert counter.count_text("hello world", "gpt-4o") == 2
        assert os.environ["TIKTOKEN_CACHE_DIR"] == str(litellm_tokenizers_dir())
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TIKTOKEN_CACHE_DIR"}
    # A fresh temp dir, so tiktoken's default /tmp cache from any earlier run cannot help.
    env |= {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    env |= {"TMPDIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=_REPO_ROOT, env=env)


@pytest.mark.parametrize(
    ("model", "encoding_name"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("openai/gpt-4.1-nano", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("o1-mini", "o200k_base"),
        ("o3", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("qwen2.5:7b", "cl100k_base"),
        ("anthropic/claude-3-5-sonnet", "cl100k_base"),
        (None, "cl100k_base"),
        ("", "cl100k_base"),
    ],
)
def test_encoding_name_follows_the_model_family(
    counter: TokenCounter, model: str | None, encoding_name: str
) -> None:
    assert counter.encoding_name_for(model) == encoding_name


def test_hello_world_is_two_tokens(counter: TokenCounter) -> None:
    assert counter.count_text("hello world") == 2
    assert counter.count_text("hello world", "gpt-4o") == 2
    assert counter.count_text("") == 0


def test_chinese_text_is_counted_without_whitespace_splitting(counter: TokenCounter) -> None:
    text = "我想退货，订单号是12345"  # one whitespace-delimited "word"
    assert counter.count_text(text) == 11
    assert counter.count_text(text, "gpt-4o") == 10
    assert counter.count_text("我的快递什么时候到？") == 13
    assert counter.count_text("我的快递什么时候到？", "gpt-4o-mini") == 6


def test_special_token_text_from_users_is_counted_not_rejected(counter: TokenCounter) -> None:
    # tiktoken's encode() raises on "<|endoftext|>"; a customer may well paste it.
    assert counter.count_text("<|endoftext|>") > 1


def test_two_message_conversation_matches_openais_formula(counter: TokenCounter) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "hello world"},
    ]
    # (3 + "system" 1 + 6) + (3 + "user" 1 + "hello world" 2) + 3 reply priming
    assert counter.count_messages(messages) == 19
    assert counter.count_messages(messages, "gpt-4o") == 19


def test_a_name_field_costs_one_extra_token(counter: TokenCounter) -> None:
    plain = [{"role": "user", "content": "hello world"}]
    named = [{"role": "user", "content": "hello world", "name": "alice"}]
    assert counter.count_messages(named) - counter.count_messages(plain) == (
        counter.count_text("alice") + 1
    )


def test_empty_conversation_costs_only_the_reply_priming(counter: TokenCounter) -> None:
    assert counter.count_messages([]) == 3


def test_content_parts_count_text_and_a_flat_85_per_image(counter: TokenCounter) -> None:
    messages: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hello world"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
            ],
        }
    ]
    assert counter.count_messages(messages) == 3 + 1 + 2 + 85 + 85 + 3


def test_unknown_part_types_count_their_string_values(counter: TokenCounter) -> None:
    messages: list[dict[str, Any]] = [
        {
            "role": "assistant",
            "content": [
                {"type": "refusal", "refusal": "hello world"},
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
            ],
        }
    ]
    assert counter.count_messages(messages) == 3 + 1 + 2 + 3


def test_none_content_costs_nothing_beyond_the_message(counter: TokenCounter) -> None:
    assert counter.count_messages([{"role": "assistant", "content": None}]) == 3 + 1 + 3


def test_assistant_tool_calls_count_function_name_and_arguments(counter: TokenCounter) -> None:
    arguments = '{"order_id": "88231"}'
    messages: list[dict[str, Any]] = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_order_status", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "shipped"},
    ]
    expected = (
        (3 + 1 + counter.count_text("get_order_status") + counter.count_text(arguments))
        + (
            3
            + counter.count_text("tool")
            + counter.count_text("call_1")
            + counter.count_text("shipped")
        )
        + 3
    )
    assert counter.count_text(arguments) == 8
    assert counter.count_messages(messages) == expected


def test_tool_call_arguments_sent_as_an_object_count_as_their_json(counter: TokenCounter) -> None:
    as_text = [
        {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1}'}}]}
    ]
    as_object = [
        {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}
    ]
    assert counter.count_messages(as_object) == counter.count_messages(as_text)


def test_counting_from_many_threads_gives_the_same_answer() -> None:
    counter = TokenCounter()  # fresh, so the threads race to load the encoding
    text = "我想退货，订单号是12345. Where is my order?"
    expected = TokenCounter().count_text(text, "gpt-4o")
    results: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(50):
            n = counter.count_text(text, "gpt-4o")
            with lock:
                results.append(n)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 400
