"""The gateway as the HTTP layer sees it: the current runtime and the pipeline to run on it."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping

from gateway.pipeline.context import RequestContext
from gateway.pipeline.core import Pipeline
from gateway.pipeline.stages import default_stages
from gateway.runtime import Runtime, RuntimeHolder


class Switchboard:
    def __init__(self, runtime: Runtime, pipeline: Pipeline | None = None) -> None:
        self.runtimes = RuntimeHolder(runtime)
        self.pipeline = pipeline or Pipeline(default_stages())
        self.ready = False

    @property
    def runtime(self) -> Runtime:
        return self.runtimes.current

    def new_context(
        self, headers: Mapping[str, str], read_body: Callable[[], Awaitable[bytes]]
    ) -> RequestContext:
        return RequestContext(
            runtime=self.runtimes.current,
            request_id=uuid.uuid4().hex,
            headers=headers,
            read_body=read_body,
        )

    async def aclose(self) -> None:
        for tier in self.runtime.tiers.values():
            await tier.aclose()
        if self.runtime.embeddings is not None:
            await self.runtime.embeddings.aclose()
        self.runtime.ledger.close()
