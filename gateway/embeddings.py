"""POST /v1/embeddings: passed to the configured embedding model, priced and recorded.

Whatever model name the client sends, the configured model answers (the response and the
``x-switchboard-model`` header say which), so every vector a tenant stores comes from one model.

A tenant with a ``budget`` reserves the input's cost (counted with tiktoken) before the call and
settles the actual cost after it, as chat requests do, so budgets and the ledger agree.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.budget import BudgetBackendError, BudgetStore
from gateway.errors import GatewayError, InvalidRequest, UpstreamError
from gateway.ledger import LedgerRecord
from gateway.money import MICROS_PER_USD, format_usd
from gateway.pipeline.budget import exceeded, finish_reservation, reserve_budget
from gateway.request_json import decode_json_body
from gateway.runtime import Runtime
from gateway.tiers.openai_compatible import usage_from
from gateway.usage import Usage

log = logging.getLogger("gateway.embeddings")


ROUTE = "embeddings"


@dataclass(slots=True)
class EmbeddingAnswer:
    body: dict[str, Any]
    headers: dict[str, str]


def _inputs_text(value: object) -> list[str] | None:
    """The texts to count when the upstream reports no usage (None for token-id inputs)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _validate(raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidRequest("The request body must be a JSON object with `model` and `input`.")
    value = raw.get("input")
    ok = (isinstance(value, str) and value != "") or (
        isinstance(value, list) and len(value) > 0 and len(value) <= 2048
    )
    if not ok:
        raise InvalidRequest(
            "`input` must be a non-empty string or a list of 1 to 2048 strings or token arrays.",
            param="input",
        )
    if isinstance(value, list) and not all(
        isinstance(v, str)
        or (isinstance(v, list) and all(isinstance(t, int) for t in v))
        or isinstance(v, int)
        for v in value
    ):
        raise InvalidRequest("`input` items must be strings or token arrays.", param="input")
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("`model` must be a non-empty string.", param="model")
    return raw


def _input_tokens(runtime: Runtime, value: object, model: str) -> int:
    """Tokens of an embeddings ``input`` (texts counted with tiktoken, token arrays as given)."""
    items = value if isinstance(value, list) else [value]
    total = 0
    for item in items:
        if isinstance(item, str):
            total += runtime.tokens.count_text(item, model)
        elif isinstance(item, list):
            total += len(item)
        else:
            total += 1  # a bare token id
    return total


async def embed(
    runtime: Runtime,
    tenant: str,
    body: bytes,
    request_id: str,
    *,
    budget_store: BudgetStore | None = None,
) -> EmbeddingAnswer:
    """Answer one embeddings request; the ledger gets a record whatever happens."""
    received = datetime.now(UTC)
    started = time.perf_counter()
    requested_model = ""
    usage = Usage()
    cost = 0
    status = 200
    error_code: str | None = None
    client = runtime.embeddings
    model = client.model if client is not None else None
    reserved = False
    warnings: dict[str, str] = {}
    try:
        if client is None:
            raise InvalidRequest(
                "This gateway serves no embeddings model (config: `embeddings`).",
                code="model_not_found",
            )
        raw = decode_json_body(body) if body else None
        payload = _validate(raw)
        requested_model = payload["model"]
        tenant_cfg = runtime.tenant(tenant)
        budget = tenant_cfg.budget
        if budget is not None:
            price = runtime.prices.price(client.model)
            tokens = _input_tokens(runtime, payload["input"], client.model)
            estimate = math.ceil(tokens * price.input_per_token * MICROS_PER_USD)
            result = await reserve_budget(
                budget_store,
                tenant_name=tenant,
                tenant=tenant_cfg,
                budget=budget,
                reservation_id=request_id,
                model=client.model,
                user=payload.get("user") if isinstance(payload.get("user"), str) else None,
                now=received,
                estimate=estimate,
                headers=warnings,
            )
            if result is not None and not result.ok:
                assert result.blocked is not None
                raise exceeded(tenant, tenant_cfg, budget, result.blocked, estimate)
            reserved = result is not None
        answer = await client.post_json("/embeddings", {**payload, "model": client.model})
        if not isinstance(answer.get("data"), list):
            raise UpstreamError(
                "the embeddings upstream answered without a `data` list",
                code="upstream_bad_response",
            )
        reported = usage_from({**(answer.get("usage") or {}), "completion_tokens": 0})
        if reported is not None:
            usage = reported
        else:
            texts = _inputs_text(payload["input"]) or []
            counted = sum(runtime.tokens.count_text(t, client.model) for t in texts)
            usage = Usage(prompt_tokens=counted, estimated=True)
            answer["usage"] = {"prompt_tokens": counted, "total_tokens": counted}
        cost = runtime.prices.cost_micros(client.model, usage)
        answer.setdefault("object", "list")
        answer["model"] = str(answer.get("model") or client.model)
        headers = {
            **warnings,
            "x-switchboard-route": ROUTE,
            "x-switchboard-model": client.model,
            "x-switchboard-cost-usd": format_usd(cost),
        }
        return EmbeddingAnswer(body=answer, headers=headers)
    except GatewayError as exc:
        status, error_code = exc.status, exc.code
        raise
    finally:
        if reserved and budget_store is not None:
            try:
                await finish_reservation(budget_store, request_id, cost)
            except BudgetBackendError as exc:
                log.warning(
                    "embeddings request %s: could not settle its budget reservation (%s); the "
                    "reaper releases it, the ledger keeps the cost",
                    request_id,
                    exc,
                )
        record = LedgerRecord(
            request_id=request_id,
            ts=received,
            tenant=tenant,
            requested_model=requested_model,
            route=ROUTE,
            model=model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=0,
            cost_micros=cost,
            large_cost_micros=cost,  # no cheaper tier answers embeddings: no savings to claim
            latency_ms=(time.perf_counter() - started) * 1000.0,
            status=status,
            stream=False,
            usage_estimated=usage.estimated,
            error_code=error_code,
        )
        try:
            runtime.ledger.record(record)
        except Exception:  # noqa: BLE001 - never fail an answer over accounting
            log.exception("could not record embeddings request %s", request_id)
