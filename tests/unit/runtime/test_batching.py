"""The dynamic batcher over a real pipeline (ONNX Runtime session, kernel modules)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_bundle import gated_pipeline, make_request

from infc_runtime.abi import RequestError
from infc_runtime.batching import Batcher, BatcherClosed, DeadlineExceeded, QueueFull
from infc_runtime.metrics import Metrics
from infc_runtime.pipeline import Pipeline
from infc_runtime.types import ServingConfig, Tensors


@pytest.fixture(scope="module")
def reference(bundle: Path) -> Pipeline:
    return Pipeline.load(bundle)


class Setup:
    """A batcher over a gated pipeline, its metrics, and what reached pre-processing."""

    def __init__(self, bundle: Path, **serving: Any) -> None:
        self.gate = threading.Event()
        self.calls: list[int] = []
        config = ServingConfig(**{"max_queue_delay_ms": 20, "timeout_ms": 5000, **serving})
        self.pipeline = gated_pipeline(bundle, config, self.gate, self.calls)
        self.metrics = Metrics("toy", max_batch_size=config.max_batch_size)
        self.batcher = Batcher(self.pipeline, self.metrics)

    def batches(self) -> tuple[float, float]:
        """(number of batches run, rows in them) from the batch-size histogram."""
        get = self.metrics.registry.get_sample_value
        return get("infc_batch_size_count", {"model": "toy"}) or 0, get("infc_batch_size_sum", {"model": "toy"}) or 0

    def stage_count(self, stage: str) -> float | None:
        """How many times a stage's duration was recorded."""
        labels = {"model": "toy", "stage": stage}
        return self.metrics.registry.get_sample_value("infc_stage_duration_seconds_count", labels)


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout=20))


def held(rows: int = 1) -> Tensors:
    """A request the gated pre kernel holds until the gate opens."""
    request = make_request(rows, seed=99)
    request["pixels"][0, 0] = 255
    return request


def assert_result(result: Tensors, expected: Tensors) -> None:
    np.testing.assert_allclose(result["probabilities"], expected["probabilities"], rtol=1e-6)
    assert result["label"].tolist() == expected["label"].tolist()


def test_concurrent_requests_run_as_one_batch(bundle: Path, reference: Pipeline) -> None:
    s = Setup(bundle, max_batch_size=8)
    requests = [make_request(1, seed=i) for i in range(5)]

    async def body() -> None:
        results = await asyncio.gather(*(s.batcher.submit(r) for r in requests))
        for result, request in zip(results, requests, strict=True):
            assert_result(result, reference.run(request))
        await s.batcher.drain()

    run(body)
    assert s.batches() == (1, 5)
    assert [s.stage_count(stage) for stage in ("queue", "pre", "infer", "post")] == [5, 1, 1, 1]


def test_batches_hold_at_most_max_batch_size_rows(bundle: Path, reference: Pipeline) -> None:
    s = Setup(bundle, max_batch_size=4)
    requests = [make_request(2, seed=i) for i in range(6)] + [make_request(9, seed=6)]

    async def body() -> None:
        results = await asyncio.gather(*(s.batcher.submit(r) for r in requests))
        for result, request in zip(results, requests, strict=True):
            assert len(result["label"]) == len(request["pixels"])
            assert_result(result, reference.run(request))
        await s.batcher.drain()

    run(body)
    # six 2-row requests make three full batches; the 9-row one runs alone
    assert s.batches() == (4, 21)
    get = s.metrics.registry.get_sample_value
    assert get("infc_batch_size_bucket", {"model": "toy", "le": "4.0"}) == 3


def test_full_queue_raises_queue_full(bundle: Path) -> None:
    s = Setup(bundle, max_batch_size=1, max_queue=2, max_queue_delay_ms=0)

    async def body() -> None:
        busy = asyncio.ensure_future(s.batcher.submit(held()))
        while not s.calls:  # the held request is on the worker thread
            await asyncio.sleep(0.005)
        waiting = [asyncio.ensure_future(s.batcher.submit(make_request(1, seed=i))) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match="2 requests waiting"):
            await s.batcher.submit(make_request(1))
        s.gate.set()
        await asyncio.gather(busy, *waiting)
        await s.batcher.drain()

    run(body)
    assert s.calls == [1, 1, 1]


def test_request_past_its_deadline_is_dropped_before_compute(bundle: Path) -> None:
    s = Setup(bundle, max_batch_size=1, max_queue_delay_ms=0, timeout_ms=50)

    async def body() -> None:
        busy = asyncio.ensure_future(s.batcher.submit(held(), timeout_s=5))
        while not s.calls:
            await asyncio.sleep(0.005)
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="50 ms"):
            await s.batcher.submit(make_request(3))
        assert time.monotonic() - started < 1  # answered at the deadline, not when the worker frees up
        with pytest.raises(DeadlineExceeded, match="20 ms"):
            await s.batcher.submit(make_request(2), timeout_s=0.02)
        assert s.batcher.queued == 0
        s.gate.set()
        await busy
        await s.batcher.drain()

    run(body)
    assert s.calls == [1]  # neither late request reached the pipeline


def test_a_bad_request_fails_alone(bundle: Path, reference: Pipeline) -> None:
    s = Setup(bundle, max_batch_size=8)
    bad = make_request(1, seed=5)
    bad["offset"][0, 1] = np.nan
    good = [make_request(2, seed=i) for i in range(3)]

    async def body() -> None:
        results = await asyncio.gather(
            *(s.batcher.submit(r) for r in [good[0], bad, *good[1:]]), return_exceptions=True
        )
        assert isinstance(results[1], RequestError) and "offset must be finite" in str(results[1])
        for result, request in zip([results[0], *results[2:]], good, strict=True):
            assert_result(result, reference.run(request))
        await s.batcher.drain()

    run(body)
    assert s.batches() == (1, 7)  # one batch; only the bad request in it failed


def test_worker_thread_keeps_the_event_loop_free(bundle: Path) -> None:
    s = Setup(bundle, max_queue_delay_ms=0)

    async def body() -> None:
        busy = asyncio.ensure_future(s.batcher.submit(held()))
        while not s.calls:
            await asyncio.sleep(0.005)
        ticks = 0
        for _ in range(5):  # the loop runs while the worker is held
            await asyncio.sleep(0.005)
            ticks += 1
        assert ticks == 5 and not busy.done()
        s.gate.set()
        await busy
        await s.batcher.drain()

    run(body)


def test_drain_finishes_queued_requests_and_refuses_new_ones(bundle: Path) -> None:
    s = Setup(bundle, max_batch_size=64, max_queue_delay_ms=10_000)

    async def body() -> None:
        pending = [asyncio.ensure_future(s.batcher.submit(make_request(1, seed=i))) for i in range(4)]
        await asyncio.sleep(0.01)
        assert s.batcher.queued == 4 and not any(p.done() for p in pending)
        drained = asyncio.ensure_future(s.batcher.drain())
        await asyncio.sleep(0)
        with pytest.raises(BatcherClosed):
            await s.batcher.submit(make_request(1))
        await drained
        assert [len(r["label"]) for r in await asyncio.gather(*pending)] == [1, 1, 1, 1]

    run(body)
    assert s.batches() == (1, 4)  # drained at once, not after the 10 s delay


def queue_seconds(s: Setup) -> float:
    """The queue waits the batcher recorded, summed."""
    labels = {"model": "toy", "stage": "queue"}
    return s.metrics.registry.get_sample_value("infc_stage_duration_seconds_sum", labels) or 0.0


def test_a_lone_request_runs_without_the_queue_delay(bundle: Path, reference: Pipeline) -> None:
    s = Setup(bundle, max_batch_size=8, max_queue_delay_ms=5000)
    requests = [make_request(1, seed=i) for i in range(3)]

    async def body() -> None:
        for request in requests:  # concurrency 1: one request at a time
            assert_result(await s.batcher.submit(request), reference.run(request))
        await s.batcher.drain()

    run(body)
    assert s.batches() == (3, 3)
    assert s.stage_count("queue") == 3 and queue_seconds(s) < 2.5  # far below 3 x 5 s


def test_requests_queued_while_the_worker_is_busy_run_as_one_batch(bundle: Path) -> None:
    s = Setup(bundle, max_batch_size=8)

    async def body() -> None:
        busy = asyncio.ensure_future(s.batcher.submit(held()))
        while not s.calls:  # the held request runs alone, at once
            await asyncio.sleep(0.005)
        waiting = [asyncio.ensure_future(s.batcher.submit(make_request(1, seed=i))) for i in range(3)]
        await asyncio.sleep(0.01)
        s.gate.set()
        await asyncio.gather(busy, *waiting)
        await s.batcher.drain()

    run(body)
    assert s.calls == [1, 1, 1, 1] and s.batches() == (2, 4)
    get = s.metrics.registry.get_sample_value
    assert get("infc_batch_size_bucket", {"model": "toy", "le": "1.0"}) == 1  # the other batch held three


def test_a_lone_request_under_concurrent_load_waits_for_company(bundle: Path) -> None:
    s = Setup(bundle, max_batch_size=2, max_queue_delay_ms=5000)

    async def body() -> None:
        await asyncio.gather(*(s.batcher.submit(make_request(1, seed=i)) for i in range(2)))
        first = asyncio.ensure_future(s.batcher.submit(make_request(1, seed=3)))
        await asyncio.sleep(0.05)
        assert not first.done()  # the last batch was concurrent: it waits for a full batch or the delay
        second = asyncio.ensure_future(s.batcher.submit(make_request(1, seed=4)))
        await asyncio.gather(first, second)
        await s.batcher.drain()

    run(body)
    assert s.batches() == (2, 4)  # two full batches of two


def test_with_two_instances_a_batch_runs_while_the_other_instance_is_busy(bundle: Path, reference: Pipeline) -> None:
    s = Setup(bundle, max_batch_size=4, max_queue_delay_ms=1, instances=2)
    assert len(s.pipeline.sessions) == 2
    requests = [make_request(2, seed=i) for i in range(3)]

    async def body() -> None:
        busy = asyncio.ensure_future(s.batcher.submit(held()))
        while not s.calls:  # the held request occupies one instance
            await asyncio.sleep(0.005)
        # the other instance answers these while the first is still held (with one instance they would wait)
        results = await asyncio.gather(*(s.batcher.submit(r) for r in requests))
        for result, request in zip(results, requests, strict=True):
            assert_result(result, reference.run(request))
        assert not busy.done()
        s.gate.set()
        assert_result(await busy, reference.run(held()))
        await s.batcher.drain()

    run(body)
    assert s.batches()[1] == 7  # every row ran once: the held one and the three requests of two


def test_with_one_instance_a_busy_worker_holds_the_queue(bundle: Path) -> None:
    s = Setup(bundle, max_batch_size=4, max_queue_delay_ms=1)

    async def body() -> None:
        busy = asyncio.ensure_future(s.batcher.submit(held()))
        while not s.calls:
            await asyncio.sleep(0.005)
        waiting = asyncio.ensure_future(s.batcher.submit(make_request(1)))
        await asyncio.sleep(0.1)
        assert not waiting.done()  # the only instance is held
        s.gate.set()
        await asyncio.gather(busy, waiting)
        await s.batcher.drain()

    run(body)
