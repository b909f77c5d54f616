"""Shared fixtures: a real mock upstream, the gateway on a real port, and real OpenAI clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import openai
import pytest

from gateway.ledger import LedgerQuery, LedgerRecord
from tests.support.gateway_server import ACME_KEY, UPSTREAM_KEY, GatewayServer, gateway_env
from tests.support.mock_upstream import MockUpstream
from tests.support.openai_spec import SpecValidator, require_spec


@pytest.fixture(scope="session")
def mock_upstream() -> Iterator[MockUpstream]:
    with MockUpstream(api_key=UPSTREAM_KEY, models=("mock-small", "gpt-4o")) as upstream:
        yield upstream


@pytest.fixture
def upstream(mock_upstream: MockUpstream) -> Iterator[MockUpstream]:
    """The session's mock upstream with an empty queue and history for this test."""
    mock_upstream.reset()
    yield mock_upstream
    mock_upstream.reset()


@pytest.fixture(scope="module")
def gateway(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    """The gateway with tests/support's config, shared by a test module (find records by id)."""
    data_dir = tmp_path_factory.mktemp("gateway-data")
    with GatewayServer(data_dir, gateway_env(mock_upstream.base_url)) as server:
        yield server


@pytest.fixture
def client(gateway: GatewayServer, upstream: MockUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=gateway.base_url,
        api_key=ACME_KEY,
        max_retries=0,
        _strict_response_validation=True,
    ) as c:
        yield c


@pytest.fixture
async def aclient(
    gateway: GatewayServer, upstream: MockUpstream
) -> AsyncIterator[openai.AsyncOpenAI]:
    c = openai.AsyncOpenAI(
        base_url=gateway.base_url,
        api_key=ACME_KEY,
        max_retries=0,
        _strict_response_validation=True,
    )
    yield c
    await c.close()


@pytest.fixture(scope="session")
def spec() -> SpecValidator:
    return require_spec()


def ledger_record(server: GatewayServer, request_id: str) -> LedgerRecord:
    """The ledger record of one request (flushes the writer first)."""
    ledger = server.switchboard.runtime.ledger
    ledger.flush()
    found = [r for r in ledger.records(LedgerQuery()) if r.request_id == request_id]
    assert len(found) == 1, f"expected one ledger record for {request_id}, found {len(found)}"
    return found[0]


def all_records(server: GatewayServer) -> list[LedgerRecord]:
    ledger = server.switchboard.runtime.ledger
    ledger.flush()
    return list(ledger.records(LedgerQuery()))
