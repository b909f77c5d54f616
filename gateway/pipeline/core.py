"""The pipeline runner: ``start`` runs the stages' ``enter`` halves, ``finish`` their ``exit``s."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gateway.errors import GatewayError, InternalError
from gateway.pipeline.context import RequestContext
from gateway.pipeline.stages import Stage

log = logging.getLogger("gateway.pipeline")


class Pipeline:
    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = tuple(stages)

    @property
    def order(self) -> list[str]:
        return [stage.name for stage in self.stages]

    async def start(self, ctx: RequestContext) -> None:
        """Run ``enter`` in order until the answer is ready (``ctx.completion`` or ``ctx.stream``).

        A stage that answers (the cache, approved answers) ends the walk: later stages' ``enter``
        and ``exit`` do not run, so an answered request never reaches the router or a tier.

        On failure the context is marked failed and the error re-raised (unexpected exceptions
        as ``InternalError``). Either way the caller must then call ``finish``.
        """
        try:
            for stage in self.stages:
                ctx.entered += 1
                await stage.enter(ctx)
                if ctx.answered:
                    break
        except GatewayError as exc:
            ctx.fail(exc)
            raise
        except Exception as exc:
            stage_name = self.stages[ctx.entered - 1].name
            log.exception("request %s failed in stage %r", ctx.request_id, stage_name)
            error = InternalError(f"Internal error (request id {ctx.request_id}).")
            ctx.fail(error)
            raise error from exc

    async def finish(self, ctx: RequestContext) -> None:
        """Run ``exit`` in reverse for every stage whose ``enter`` ran. Never raises."""
        entered, ctx.entered = ctx.entered, 0  # finishing twice must not record twice
        for stage in reversed(self.stages[:entered]):
            try:
                await stage.exit(ctx)
            except Exception:  # noqa: BLE001 - one stage's failure must not skip the ledger
                log.exception("request %s: stage %r failed to finish", ctx.request_id, stage.name)
