"""Feedback closes the loop: what a verdict on a request does to the answer caches.

``POST /v1/feedback`` (``gateway/feedback.py``) stores a verdict by request id. A pipeline stage
or the feedback handler then calls:

* :func:`apply_verdict`: ``bad`` removes the semantic-cache entry the request was served from, or
  the one its answer created, at once (the cache keeps the request id → entry mapping for the
  entry's time to live); ``good`` and ``handoff`` change nothing.
* :func:`gateway.answers.promote.promote_answer` / ``promote_example``: a person approved an
  answer (or a wording): it goes into the tenant's approved-answers file, checked, and is served
  after the next ``gateway answers train``.
"""

from __future__ import annotations

from gateway.cache.semantic.cache import SemanticCache

__all__ = ["apply_verdict"]


def apply_verdict(cache: SemanticCache, tenant: str, request_id: str, verdict: str) -> bool:
    """Act on a verdict; True when a cached entry was removed."""
    if verdict != "bad":
        return False
    return cache.invalidate_request(tenant, request_id)
