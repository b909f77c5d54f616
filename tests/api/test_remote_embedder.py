"""The semantic cache with a remote embedding model (``semantic_cache.embedder: embeddings``):
vectors from the ``embeddings:`` model over HTTP (the mock upstream's /v1/embeddings on a real
port), a down embedding service is a miss and never a failed request, and bad config is refused
with the $.path and the fix."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import openai
import pytest

from gateway.config import ConfigError
from gateway.remote_embedder import EmbedderFailed, HttpEmbedder
from tests.support.gateway_server import (
    ACME_KEY,
    TEST_CONFIG,
    UPSTREAM_KEY,
    GatewayServer,
    gateway_env,
    load_test_config,
)
from tests.support.mock_upstream import MockUpstream, Status

REMOTE_CONFIG = TEST_CONFIG.replace(
    "    store_request_text: true\n",
    "    store_request_text: true\n    semantic_cache: { enabled: true }\n",
) + ("semantic_cache:\n  embedder: embeddings\n  embedding_dim: 3\n  threshold: 0.99\n")


@pytest.fixture(scope="module")
def gateway(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    env = gateway_env(mock_upstream.base_url)
    with GatewayServer(tmp_path_factory.mktemp("remote-emb"), env, REMOTE_CONFIG) as server:
        yield server


def ask(gateway: GatewayServer, text: str) -> tuple[str, dict[str, str]]:
    with openai.OpenAI(base_url=gateway.base_url, api_key=ACME_KEY, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": text}]
        )
        return raw.parse().choices[0].message.content or "", dict(raw.headers)


def embedding_calls(upstream: MockUpstream) -> int:
    return sum(1 for r in upstream.history if r.path.endswith("/embeddings"))


def test_the_second_asking_is_served_by_the_semantic_cache_with_remote_vectors(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    question = "Which colours does the Vantor desk lamp come in?"
    first, headers = ask(gateway, question)
    assert headers["x-switchboard-route"] != "cache"
    assert embedding_calls(upstream) >= 1  # the lookup (and the store) asked the model
    chats = sum(1 for r in upstream.history if r.path.endswith("/chat/completions"))

    second, headers = ask(gateway, question)

    assert headers["x-switchboard-cache-layer"] == "semantic"
    assert second == first
    assert sum(1 for r in upstream.history if r.path.endswith("/chat/completions")) == chats
    sent = [r.json for r in upstream.history if r.path.endswith("/embeddings")]
    assert all(body["model"] == "text-embedding-3-small" for body in sent)


def test_a_down_embedding_service_is_a_miss_and_the_model_answers(
    gateway: GatewayServer, upstream: MockUpstream
) -> None:
    upstream.enqueue(Status(503))  # the lookup's embedding call gets it

    text, headers = ask(gateway, "Does the Orlin kettle switch itself off?")

    assert text  # answered by the tier
    assert headers["x-switchboard-semantic-cache"] == "miss: embedder unavailable"
    assert headers["x-switchboard-route"] != "cache"


def test_vectors_of_another_length_are_refused_naming_the_setting(
    mock_upstream: MockUpstream,
) -> None:
    embedder = HttpEmbedder(base_url=mock_upstream.base_url, model="m", dim=8, api_key=UPSTREAM_KEY)
    with pytest.raises(EmbedderFailed, match="semantic_cache.embedding_dim"):
        embedder.embed("hello")
    embedder.close()


def test_vectors_come_back_unit_length_in_input_order(mock_upstream: MockUpstream) -> None:
    embedder = HttpEmbedder(base_url=mock_upstream.base_url, model="m", dim=3, api_key=UPSTREAM_KEY)
    vectors = embedder.embed_many(["a b c", "one"])
    embedder.close()

    assert vectors.shape == (2, 3)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    expected = np.array(MockUpstream.embedding_for("a b c"), dtype=np.float32)
    np.testing.assert_allclose(vectors[0], expected / np.linalg.norm(expected), rtol=1e-6)


def test_an_unreachable_service_raises_embedder_failed() -> None:
    embedder = HttpEmbedder(base_url="http://127.0.0.1:9/v1", model="m", dim=3)
    with pytest.raises(EmbedderFailed, match="failed"):
        embedder.embed("hello")
    embedder.close()


def test_remote_embedder_without_an_embeddings_section_is_refused() -> None:
    text = REMOTE_CONFIG.replace(
        "embeddings:\n  upstream: mock\n  model: text-embedding-3-small\n", ""
    )
    with pytest.raises(ConfigError, match=r"\$\.semantic_cache\.embedder: .*embeddings:"):
        load_test_config(gateway_env("http://127.0.0.1:1/v1"), text)


def test_remote_embedder_without_a_dimension_is_refused() -> None:
    text = REMOTE_CONFIG.replace("  embedding_dim: 3\n", "")
    with pytest.raises(ConfigError, match=r"\$\.semantic_cache\.embedding_dim: .*1536"):
        load_test_config(gateway_env("http://127.0.0.1:1/v1"), text)
