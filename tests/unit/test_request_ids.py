"""Request ids: unique, 32 hex digits, the first 16 naming the process."""

from __future__ import annotations

import multiprocessing
import re

from gateway.request_ids import new_request_id, process_prefix


def _child_ids(queue: multiprocessing.Queue[tuple[str, str]]) -> None:
    queue.put((process_prefix(), new_request_id()))


def test_ids_are_32_hex_digits_unique_and_start_with_the_process_prefix() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert {i[:16] for i in ids} == {process_prefix()}


def test_a_forked_child_draws_its_own_prefix() -> None:
    queue: multiprocessing.Queue[tuple[str, str]] = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=_child_ids, args=(queue,))
    child.start()
    prefix, first = queue.get(timeout=30)
    child.join(timeout=30)
    assert prefix != process_prefix()
    assert first.startswith(prefix)
    assert first != new_request_id()
