"""The gateway as the HTTP layer sees it: the current runtime and the pipeline to run on it."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

import anyio

from gateway.cache.store import CacheStore
from gateway.feedback import FeedbackStore
from gateway.pipeline.context import RequestContext
from gateway.pipeline.core import Pipeline
from gateway.pipeline.stages import default_stages
from gateway.runtime import Runtime, RuntimeHolder
from gateway.telemetry import ObserveStage, Telemetry

if TYPE_CHECKING:
    from gateway.reload import ConfigReloader


class Switchboard:
    def __init__(
        self,
        runtime: Runtime,
        pipeline: Pipeline | None = None,
        telemetry: Telemetry | None = None,
        cache_store: CacheStore | None = None,
        feedback: FeedbackStore | None = None,
    ) -> None:
        self.runtimes = RuntimeHolder(runtime)
        self.feedback = feedback
        # Set when the config came from a file: reloads it on SIGHUP or change.
        self.reloader: ConfigReloader | None = None
        self.telemetry = telemetry
        self.cache_store = cache_store
        stages = default_stages(cache_store)
        if telemetry is not None:
            # First, so its exit runs last and sees the final status and cost.
            stages = [ObserveStage(telemetry), *stages]
        self.pipeline = pipeline or Pipeline(stages)
        self.ready = False

    @property
    def runtime(self) -> Runtime:
        return self.runtimes.current

    def new_context(
        self, headers: Mapping[str, str], read_body: Callable[[], Awaitable[bytes]]
    ) -> RequestContext:
        return RequestContext(
            runtime=self.runtimes.current,
            request_id=os.urandom(16).hex(),  # as unique as uuid4, a third of the cost
            headers=headers,
            read_body=read_body,
        )

    async def aclose(self) -> None:
        for tier in self.runtime.tiers.values():
            await tier.aclose()
        if self.runtime.embeddings is not None:
            await self.runtime.embeddings.aclose()
        if self.cache_store is not None:
            await self.cache_store.aclose()
        self.runtime.ledger.close()
        if self.feedback is not None:
            self.feedback.close()
        if self.reloader is not None:
            await self.reloader.aclose()
        if self.telemetry is not None:
            # Exporting blocks on the network (up to ~10 s when a collector is down).
            await anyio.to_thread.run_sync(self.telemetry.shutdown)
