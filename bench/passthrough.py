"""The floor to compare the gateway with: a bare Litestar + aiohttp pass-through, nothing else.

    .venv/bin/python bench/passthrough.py --port 9002 --upstream http://127.0.0.1:9001/v1

The same server stack as ``gateway serve`` (uvicorn with uvloop and httptools, access log off,
Litestar, one pooled ``aiohttp.ClientSession``), but no auth, parsing, token counting, routing,
pricing or ledger: the request body goes upstream as it came and the answer comes back as it
went (streams chunk by chunk). ``bench/overhead.py --baseline`` runs it as a third target, so the
report separates what the framework stack costs from what the gateway's own pipeline costs.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import uvicorn
from litestar import Litestar, Request, Response, get, post
from litestar.response import Stream


def create_app(upstream: str) -> Litestar:
    url = upstream.rstrip("/") + "/chat/completions"
    state: dict[str, aiohttp.ClientSession] = {}

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        state["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200, limit_per_host=200),
            skip_auto_headers=("User-Agent",),
        )
        try:
            yield
        finally:
            await state["session"].close()

    @post("/v1/chat/completions", status_code=200)
    async def chat(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
        body = await request.body()
        resp = await state["session"].post(
            url, data=body, headers={"content-type": "application/json"}
        )
        if resp.headers.get("content-type", "").startswith("text/event-stream"):

            async def relay() -> AsyncIterator[bytes]:
                try:
                    async for chunk in resp.content.iter_any():
                        yield chunk
                finally:
                    resp.release()

            return Stream(relay(), media_type="text/event-stream")
        try:
            raw = await resp.read()
        finally:
            resp.release()
        return Response(content=raw, status_code=resp.status, media_type="application/json")

    @get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar(route_handlers=[chat, readyz], lifespan=[lifespan], logging_config=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--upstream", required=True, help="upstream base URL ending in /v1")
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(args.upstream),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
