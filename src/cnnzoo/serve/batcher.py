"""Micro-batching: requests that arrive together share one forward pass.

A forward pass of LeNet-5 on 32 images costs little more than on one (the per-call overhead of a dozen
modules dominates), so under load the server gathers concurrent requests into one batch:

1. `submit(images)` puts the request's (k, C, H, W) images in a queue and awaits its future.
2. A request that finds the batcher idle (nothing queued, no batch running) runs at once: waiting for
   company that is not coming would only add `max_delay` to a lone request. Otherwise the worker takes
   the queue's first request and waits until the batch is full (`max_batch_size` images) or `max_delay`
   has passed since that request arrived, whichever comes first. Under load the requests that arrive
   while a batch runs are the company: they queue, and go together once it is done.
3. It joins the requests' images (`combine`, by default `torch.cat`) and runs the batch (`run_batch`,
   under `torch.inference_mode()` in the predictor) on a worker thread, off the event loop, so the loop
   keeps accepting and queueing requests meanwhile.
4. Each request gets its own rows back (`output[start:end]`: a tensor, a list, or anything sliceable)
   with the size of the batch it joined and how long it waited.

A request whose wait passes `timeout` fails with `Overloaded` (the app answers 503 with Retry-After),
and so does one that finds `max_queue` images already waiting. `max_batch_size=1` turns batching off:
one forward per request, as a baseline.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["BatchResult", "MicroBatcher", "Overloaded"]


class Overloaded(Exception):
    """The request waited too long, or the queue is full: try again shortly."""


@dataclass
class BatchResult:
    output: Any  # this request's k rows of the batch output (`run_batch`'s result, sliced)
    batch_size: int  # images in the forward pass it joined
    wait_s: float  # from its arrival to the start of that forward pass


@dataclass
class _Entry:
    images: Tensor  # (k, C, H, W)
    future: asyncio.Future
    arrived: float
    timer: asyncio.TimerHandle | None = field(default=None)
    at_once: bool = False  # it found the batcher idle: it runs without waiting for company


class MicroBatcher:
    def __init__(
        self,
        run_batch: Callable[[Tensor], Any],
        executor: Executor,
        *,
        max_batch_size: int = 32,
        max_delay_s: float = 0.002,
        timeout_s: float = 5.0,
        max_queue: int = 4096,
        on_batch: Callable[[int], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
        combine: Callable[[list[Tensor]], Tensor] | None = None,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.run_batch, self.executor = run_batch, executor
        self.max_batch_size, self.max_delay_s = max_batch_size, max_delay_s
        self.timeout_s, self.max_queue = timeout_s, max_queue
        self.on_batch, self.on_depth = on_batch, on_depth
        self.combine = combine or _cat  # the requests' images -> one batch (on the worker thread)
        self._queue: deque[_Entry] = deque()
        self._queued = 0  # images waiting
        self._wakeup: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._running = False  # a batch is on the worker thread now

    # --- the request side ----------------------------------------------------------------------

    async def submit(self, images: Tensor) -> BatchResult:
        """Queue (k, C, H, W) images; return their outputs once the batch they joined has run."""
        if self._task is None:
            raise RuntimeError("the batcher is not running (call start() in the event loop first)")
        if self._queued + len(images) > self.max_queue:
            raise Overloaded(f"{self._queued} images already queued (limit {self.max_queue})")
        loop = asyncio.get_running_loop()
        idle = not self._queue and not self._running
        entry = _Entry(images, loop.create_future(), time.perf_counter(), at_once=idle)
        entry.timer = loop.call_later(self.timeout_s, self._expire, entry)
        self._queue.append(entry)
        self._queued += len(images)
        self._depth_changed()
        waiting = self._wakeup is not None and not self._wakeup.done()
        if waiting and (len(self._queue) == 1 or self._should_run()):  # a first request sets the deadline
            self._wakeup.set_result(None)
        try:
            return await entry.future
        finally:
            entry.timer.cancel()

    def _expire(self, entry: _Entry) -> None:
        if not entry.future.done():
            waited = time.perf_counter() - entry.arrived
            entry.future.set_exception(
                Overloaded(
                    f"waited {1000 * waited:.0f} ms for a forward pass (limit {1000 * self.timeout_s:.0f} ms)"
                )
            )

    def _depth_changed(self) -> None:
        if self.on_depth is not None:
            self.on_depth(self._queued)

    # --- the worker side -----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        """Stop after the requests already queued have run (graceful shutdown)."""
        if self._task is None:
            return
        self._stopping = True
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        await self._task
        self._task = None

    def _should_run(self) -> bool:
        """A batch is ready: full, its first request found the batcher idle or waited its delay out, or
        the server is stopping."""
        if not self._queue:
            return False
        if self._queued >= self.max_batch_size or self._stopping or self._queue[0].at_once:
            return True
        return time.perf_counter() >= self._queue[0].arrived + self.max_delay_s

    async def _wait_until_ready(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._should_run():
            if self._stopping and not self._queue:
                return
            self._wakeup = loop.create_future()
            timer = None
            if self._queue:  # wake at the first request's deadline at the latest
                delay = self._queue[0].arrived + self.max_delay_s - time.perf_counter()
                timer = loop.call_later(max(delay, 0), _resolve, self._wakeup)
            try:
                await self._wakeup
            finally:
                if timer is not None:
                    timer.cancel()
                self._wakeup = None

    def _take(self) -> list[_Entry]:
        """Requests for one batch, in arrival order, up to `max_batch_size` images (a single request
        larger than that runs alone); requests that already timed out are dropped."""
        taken: list[_Entry] = []
        count = 0
        while self._queue:
            entry = self._queue[0]
            k = len(entry.images)
            if entry.future.done():  # expired while queued
                self._queue.popleft()
                self._queued -= k
                continue
            if taken and count + k > self.max_batch_size:
                break
            self._queue.popleft()
            self._queued -= k
            taken.append(entry)
            count += k
            if count >= self.max_batch_size:
                break
        self._depth_changed()
        return taken

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_until_ready()
            if self._stopping and not self._queue:
                return
            entries = self._take()
            if not entries:
                continue
            started = time.perf_counter()
            size = sum(len(e.images) for e in entries)
            self._running = True
            try:
                output = await loop.run_in_executor(self.executor, self._run, [e.images for e in entries])
            except Exception as e:  # a failing forward fails its requests, not the server
                for entry in entries:
                    if not entry.future.done():
                        entry.future.set_exception(e)
                continue
            finally:
                self._running = False
            if self.on_batch is not None:
                self.on_batch(size)
            start = 0
            for entry in entries:
                k = len(entry.images)
                if not entry.future.done():
                    entry.future.set_result(
                        BatchResult(output[start : start + k], size, started - entry.arrived)
                    )
                start += k

    def _run(self, parts: list[Tensor]):
        """On the worker thread: the requests' images as one batch, through `run_batch`."""
        return self.run_batch(self.combine(parts))


def _cat(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
