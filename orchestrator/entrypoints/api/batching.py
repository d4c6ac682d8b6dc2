"""Group commit for the API: concurrent requests hand their item to one writer, which stores a
batch of them in one transaction (in a worker thread) and answers each request once its batch is
committed. A request is never answered before its item is durable; a failed batch fails each of
its requests (which answer 503 and are retried by their sender)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Callable, Generic, TypeVar

from starlette.concurrency import run_in_threadpool

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    def __init__(self, flush: Callable[[list[Item]], list[Result]], max_batch: int = 200):
        self.flush, self.max_batch = flush, max_batch
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:  # first use, or a new loop
            self._queue, self._loop = asyncio.Queue(), loop
            self._task = loop.create_task(self._write(self._queue), name="group-commit")
        assert self._queue is not None
        answer: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, answer))
        return await answer

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _write(self, queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]]) -> None:
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                results = await run_in_threadpool(self.flush, [item for item, _ in batch])
            except asyncio.CancelledError:
                for _, answer in batch:
                    answer.cancel()
                raise
            except Exception as exc:  # each request answers for itself (a 503)
                for _, answer in batch:
                    if not answer.done():
                        answer.set_exception(exc)
                continue
            for (_, answer), result in zip(batch, results):
                if not answer.done():
                    answer.set_result(result)
