"""Dynamic batching: group concurrent requests, run them on one worker thread.

Requests wait in a bounded queue (`serving.max_queue` requests; beyond that
`submit` raises `QueueFull`, answered 429). A batch is taken when the queued
rows reach `serving.max_batch_size` or `serving.max_queue_delay_ms` has passed
since its first request arrived; a request with more rows than the maximum runs
as a batch of its own. A lone request runs at once, without the delay: when
the worker is idle, no other request is in the batcher (queued, running, or
answered but not yet picked up) or in the server on its way to it (received,
`Metrics.inflight`, but not yet submitted) and the traffic is not concurrent (the last
batch held one request, or ended more than a delay before it came). Under
concurrent load, requests queue while the worker runs a batch, and a lone one
waits up to the delay for company, so batches still fill.

Text is batched by length: a batch is the oldest request, then others of the
nearest length buckets (`Pipeline.length_bucket`, a doubling of text length per
bucket), so when the queue holds more than a batch, short sentences are not
padded to long ones; a batch is never smaller for it. The oldest request always
goes first, so no bucket starves. Without text every request is in bucket 0
and batches are the oldest requests, as they queued.
Batches run `Pipeline.run_batch` on a dedicated worker thread, so the event
loop never blocks on compute. With one instance (`serving.instances`, the
default) ONNX Runtime sees one batch at a time and requests gather while it
runs; with N, up to N batches run at once, each on its own session and thread,
the next batch formed as soon as an instance is free. A request
still queued at its deadline (`serving.timeout_ms`, or its own timeout) is
dropped before it costs compute (`DeadlineExceeded`, answered 504).
`drain()` stops accepting and finishes everything already accepted.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .drift import DriftMonitor
from .metrics import Metrics
from .pipeline import Pipeline
from .tracing import RequestTrace, Tracing
from .types import Tensors

__all__ = ["Batcher", "BatcherClosed", "DeadlineExceeded", "QueueFull"]

log = logging.getLogger("infc_runtime")

T = TypeVar("T")

_LOOK_TURNS = 4
"""Event-loop turns a lone request yields before it runs alone (microseconds, not the queue delay)."""


class QueueFull(Exception):
    """The queue holds `max_queue` requests already (HTTP 429)."""

    retry_after_s = 1


class DeadlineExceeded(Exception):
    """The request's deadline passed while it was queued (HTTP 504)."""


class BatcherClosed(Exception):
    """The batcher is draining for shutdown and takes no new requests (HTTP 503)."""


@dataclass(eq=False)
class _Item:
    tensors: Tensors
    rows: int
    future: asyncio.Future[Tensors]
    enqueued: float
    bucket: int = 0
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    looked: bool = False  # the loop had its turns to bring company before this request ran alone
    trace: RequestTrace | None = None
    info: dict[str, Any] | None = None  # the request log's record of it (`logs.RequestLog`), when one is kept


class Batcher:
    """Queues requests for one pipeline and runs them in batches on a worker thread."""

    def __init__(self, pipeline: Pipeline, metrics: Metrics | None = None, tracing: Tracing | None = None) -> None:
        self.pipeline = pipeline
        self.config = pipeline.serving
        self.metrics = metrics
        self.tracing = tracing  # with it, each batch is a span linked to its requests' (`RequestTrace`s)
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._waiter: asyncio.Future[None] | None = None  # the collector sleeps on it; `_wake` resolves it
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        # the last batch: how many requests it held and when it ended (whether traffic is concurrent)
        self._last_requests = 0
        self._last_end = float("-inf")
        self._active = 0  # requests queued, running, or answered and not yet picked up
        self.queue_waits: deque[float] = deque(maxlen=1024)
        """Seconds the latest requests (up to 1024) waited in the queue, in the order they were taken."""
        # one worker thread per instance (`Pipeline.sessions`); the instances with no batch running
        self._executors = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infc-worker-{i}")
                           for i in range(len(pipeline.sessions))]
        self._free = list(reversed(range(len(self._executors))))
        self._running: set[asyncio.Task[None]] = set()
        self._batches = 0  # batches run so far: the id of the next one

    def start(self) -> None:
        """Start collecting batches (call from the running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._collect(), name="infc-batcher")

    @property
    def queued(self) -> int:
        """Requests waiting in the queue."""
        return len(self._queue)

    async def run_in_worker(self, fn: Callable[[], T], instance: int = 0) -> T:
        """Run `fn` on the worker thread of `instance`, in turn with its batches (e.g. warm-up)."""
        return await asyncio.get_running_loop().run_in_executor(self._executors[instance], fn)

    async def warm_up(self) -> None:
        """`Pipeline.warmup` on every instance, each on its own worker thread, at once."""
        await asyncio.gather(*(self.run_in_worker(functools.partial(self.pipeline.warmup, instance=i), i)
                               for i in range(len(self._executors))))

    async def submit(self, tensors: Tensors, *, timeout_s: float | None = None,
                     trace: RequestTrace | None = None) -> Tensors:
        """Queue one request (batch on axis 0) and wait for its own result.

        Raises `QueueFull`, `BatcherClosed`, `DeadlineExceeded`, or what the
        pipeline raised for this request (`RequestError` for bad data).
        """
        return await self.enqueue(tensors, timeout_s=timeout_s, trace=trace)

    def enqueue(self, tensors: Tensors, *, timeout_s: float | None = None,
                info: dict[str, Any] | None = None,
                trace: RequestTrace | None = None) -> asyncio.Future[Tensors]:
        """Queue one request; the future of its result (what `submit` awaits), without a task of its own.

        Raises `QueueFull` or `BatcherClosed` at once. Cancelling the future
        withdraws the request: still queued, it never reaches the model.
        `info` (a request log record) receives `batch_id`, `batch_size` (rows)
        and the seconds of its stages in `info["stages"]` (queue, pre, infer, post).
        """
        if self._closing:
            raise BatcherClosed("the server is shutting down")
        if len(self._queue) >= self.config.max_queue:
            raise QueueFull(f"the queue is full ({self.config.max_queue} requests waiting)")
        self.start()
        loop = asyncio.get_running_loop()
        rows = len(next(iter(tensors.values()))) if tensors else 0
        future: asyncio.Future[Tensors] = loop.create_future()
        item = _Item(tensors, rows, future, time.monotonic(), self.pipeline.length_bucket(tensors), info=info,
                     trace=trace)
        timeout = self.config.timeout_ms / 1000 if timeout_s is None else timeout_s
        item.timer = loop.call_later(timeout, self._expire, item, timeout)
        self._queue.append(item)
        self._queued_rows += rows
        self._active += 1
        future.add_done_callback(self._answered)
        self._queue_changed()
        if len(self._queue) == 1 or self._queued_rows >= self.config.max_batch_size:
            self._wake()  # the collector sleeps on an empty queue, or waits for a batch that is now full
        return future

    async def drain(self) -> None:
        """Stop taking requests, finish every queued one, then stop the worker."""
        self.start()
        self._closing = True
        self._wake()
        if self._task is not None:
            await self._task
        if self._running:
            await asyncio.wait(self._running)
        for executor in self._executors:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)

    # -- internals ---------------------------------------------------------
    def _queue_changed(self) -> None:
        if self.metrics is not None:
            self.metrics.set_queue_depth(len(self._queue))

    def _wake(self) -> None:
        """Wake the collector if it sleeps (for an empty queue, or for its batch to fill)."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _sleep(self, seconds: float | None = None) -> None:
        """Sleep until `_wake`, or for at most `seconds`."""
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        timer = None if seconds is None else loop.call_later(seconds, self._wake)
        try:
            await self._waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _answered(self, future: asyncio.Future[Tensors]) -> None:
        self._active -= 1

    def _expire(self, item: _Item, timeout: float) -> None:
        """Drop a request still queued at its deadline; it never reaches the model."""
        if item in self._queue:
            self._queue.remove(item)
            self._queued_rows -= item.rows
            self._queue_changed()
            if not item.future.done():
                item.future.set_exception(DeadlineExceeded(f"not started within its timeout of {timeout * 1000:g} ms"))

    async def _collect(self) -> None:
        """Form batches and run them, one at a time, until drained."""
        delay = self.config.max_queue_delay_ms / 1000
        while True:
            if not self._queue:
                if self._closing:
                    return
                await self._sleep()
                continue
            # Wait for a full batch, or for the oldest request's delay to pass; a lone request runs at once.
            remaining = self._queue[0].enqueued + delay - time.monotonic()
            waits = not self._closing and self._queued_rows < self.config.max_batch_size and remaining > 0
            if waits and self._lone() and not self._queue[0].looked:
                # before running it alone, let the loop take in requests whose bytes are already here
                self._queue[0].looked = True
                for _ in range(_LOOK_TURNS):
                    await asyncio.sleep(0)
                continue
            if waits and not self._lone():
                await self._sleep(remaining)  # woken early when the batch fills or the server stops
                continue  # look again
            batch = self._take()
            if batch:
                await self._dispatch(batch)

    def _lone(self) -> bool:
        """The queue holds one request, no other is in the batcher or arriving, and nothing says more are coming:
        the last batch held one request, or it ended more than a delay before this request arrived."""
        arriving = self.metrics.inflight - self._active if self.metrics is not None else 0
        if len(self._queue) != 1 or self._active > 1 or arriving > 0:
            return False
        item = self._queue[0]
        return self._last_requests <= 1 or item.enqueued - self._last_end > self.config.max_queue_delay_ms / 1000

    def _take(self) -> list[_Item]:
        """The oldest queued request, then others while their rows fit: the nearest length buckets first,
        the oldest first within one (without text, simply the oldest)."""
        now = time.monotonic()
        head = self._queue[0].bucket if self._queue else 0
        ranked = sorted(range(len(self._queue)), key=lambda i: (i > 0, abs(self._queue[i].bucket - head), i))
        chosen: set[int] = set()
        rows = 0
        for i in ranked:
            item = self._queue[i]
            if item.future.done() or not chosen or rows + item.rows <= self.config.max_batch_size:
                chosen.add(i)
                rows += 0 if item.future.done() else item.rows
        batch: list[_Item] = []
        kept: deque[_Item] = deque()
        for i, item in enumerate(self._queue):
            if i not in chosen:
                kept.append(item)
                continue
            self._queued_rows -= item.rows
            if item.timer is not None:
                item.timer.cancel()
            if item.future.done():  # the caller went away
                continue
            batch.append(item)
            self.queue_waits.append(now - item.enqueued)
            if self.metrics is not None:
                self.metrics.observe_stage("queue", now - item.enqueued)
            if item.info is not None:
                item.info.setdefault("stages", {})["queue"] = now - item.enqueued
        self._queue = kept
        self._queue_changed()
        return batch

    async def _dispatch(self, batch: list[_Item]) -> None:
        """Run `batch` on a free instance; return once another batch may be formed.

        With one instance that is when this batch is done (requests gather
        meanwhile); with several, at once while another instance is free.
        """
        if len(self._executors) == 1:
            await self._run(batch, 0)
            return
        instance = self._free.pop()
        task = asyncio.get_running_loop().create_task(self._run(batch, instance))
        self._running.add(task)
        task.add_done_callback(functools.partial(self._instance_done, instance))
        while not self._free:
            await self._sleep()

    def _instance_done(self, instance: int, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._free.append(instance)
        self._wake()

    async def _run(self, batch: list[_Item], instance: int) -> None:
        """Run one batch on the worker thread of `instance`; resolve each request with its own result."""
        traced = None if self.tracing is None else self.tracing.batch()  # the batch's span, once it has run
        intervals = None if traced is None else traced.intervals
        timings: dict[str, float] = {}
        requests = [item.tensors for item in batch]
        drift = self.pipeline.drift
        observed: list[tuple[Tensors, Tensors]] | None = None if drift is None else []
        try:
            results: list[Any] = await self.run_in_worker(
                lambda: self.pipeline.run_batch(requests, timings=timings, instance=instance, intervals=intervals,
                                                observed=observed),
                instance)
        except Exception as exc:  # the batch as a whole failed: only its requests fail
            results = [exc] * len(batch)
        self._last_requests, self._last_end = len(batch), time.monotonic()
        self._batches += 1
        if self.metrics is not None:
            self.metrics.observe_batch(sum(item.rows for item in batch))
            for stage, seconds in timings.items():
                self.metrics.observe_stage(stage, seconds)
        if traced is not None:
            traced.finish([item.trace for item in batch], sum(item.rows for item in batch), instance)
        for item, result in zip(batch, results, strict=True):
            if item.info is not None:
                item.info.update(batch_id=self._batches, batch_size=sum(i.rows for i in batch))
                item.info.setdefault("stages", {}).update(timings)
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)
        if drift is not None and observed:
            # the drift indicators fold the batch's sampled rows once it is answered: next on its worker thread,
            # ahead of the next batch there (one at a time per instance: bounded), never awaited here; a batch
            # with no sampled row costs a counter
            picked = [(inputs, out, rows) for inputs, out in observed
                      if (rows := drift.sample(len(next(iter(inputs.values()))) if inputs else 0)) is not None]
            if picked:
                self._executors[instance].submit(_fold, drift, picked)


def _fold(drift: DriftMonitor, picked: list[tuple[Tensors, Tensors, slice]]) -> None:
    """Fold a batch's sampled rows into the drift indicators (on the worker thread); a failure is logged."""
    try:
        for model_inputs, response, rows in picked:
            drift.fold(model_inputs, response, rows)
    except Exception:
        log.exception("drift indicators: folding a batch failed")
