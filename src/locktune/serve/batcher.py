"""Concurrent text queries encoded together: requests wait on one worker thread that takes every query
queued at that moment (up to `max_batch`) and runs the text tower once for all of them; a search query is
also ranked there, the whole batch against the index at once (`ImageIndex.search_many`: brute force reads the
index once, not once per query; faiss searches the batch together), and no request's arithmetic runs on the
server's event loop.

While one batch is being encoded, new queries queue up and form the next batch, so under load the batch
grows by itself and a query waits about one batch's encoding time instead of every earlier query's.  Under
load (the last batch held more than one query) the worker also waits up to `max_wait_s` for the batch to
fill; a lone query on an idle server is answered at once.  A
batch that fails (a bug, an out-of-memory) fails only its own requests; the worker keeps serving."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Callable

import numpy as np


class TextBatcher:
    def __init__(self, encode: Callable[[list[str]], np.ndarray], max_batch: int = 64, max_wait_s: float = 0.02,
                 search_many: Callable[[np.ndarray, list[int]], list] | None = None):
        self.encode = encode
        self.search_many = search_many  # (queries [q, dim], ks) -> [(rows, scores)] for `search_one`
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._last_size = 0
        self.batches = 0  # how many text-tower calls served the queries so far (for tests and /api/info)
        self.queries = 0
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

    async def encode_one(self, text: str) -> np.ndarray:
        """The embedding of `text`, computed in a batch with whatever other queries are waiting."""
        return await self._submit(text, None)

    async def search_one(self, text: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) of the k indexed images nearest to `text`, ranked in a batch with other queries."""
        return await self._submit(text, k)

    async def _submit(self, text: str, k: int | None):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._start()
        self._queue.put((text, k, future, loop))
        return await future

    def _start(self) -> None:
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._serve_forever, name="locktune-text-batcher", daemon=True)
                self._worker.start()

    def _serve_forever(self) -> None:
        while True:
            waiting = [self._queue.get()]
            busy = self._last_size > 1
            deadline = time.monotonic() + (self.max_wait_s if busy else 0.0)
            while len(waiting) < self.max_batch:
                try:
                    waiting.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            self._last_size = len(waiting)
            self._answer(waiting)

    def _answer(self, waiting: list) -> None:
        distinct = list(dict.fromkeys(text for text, *_ in waiting))  # a repeated query is encoded once
        try:
            values = self._values(waiting, distinct)
            outcome = [(future, loop, value, None) for (_, _, future, loop), value in zip(waiting, values)]
        except Exception as error:  # noqa: BLE001 - handed to each waiting request
            outcome = [(future, loop, None, error) for _, _, future, loop in waiting]
        self.batches += 1
        self.queries += len(waiting)
        for future, loop, value, error in outcome:
            loop.call_soon_threadsafe(_settle, future, value, error)

    def _values(self, waiting: list, distinct: list[str]) -> list:
        embeddings = self.encode(distinct)
        row_of = {text: i for i, text in enumerate(distinct)}
        searches = [(row_of[text], k) for text, k, *_ in waiting if k is not None]
        ranked = iter(self.search_many(embeddings[[r for r, _ in searches]], [k for _, k in searches])
                      if searches else [])
        return [embeddings[row_of[text]] if k is None else next(ranked) for text, k, *_ in waiting]


def _settle(future: asyncio.Future, value, error) -> None:
    if future.cancelled():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
