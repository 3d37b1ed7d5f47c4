"""One inference queue per model: utterances from every stream (in any language the model
speaks) are batched (up to ``asr.batch_max``) into single engine calls run in worker threads,
off the event loop."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from loguru import logger

from .engine import AsrEngine, EngineResult, Request

__all__ = ["Recognizer", "Job"]


@dataclass
class Job:
    request: Request
    partial: bool = False
    future: asyncio.Future[EngineResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    queued: float = field(default_factory=time.monotonic)


class Recognizer:
    """Finals first, partials only when nothing else waits (they are a nicety, not a duty)."""

    def __init__(self, engine: AsrEngine, *, workers: int = 1, batch_max: int = 8) -> None:
        self.engine = engine
        self.batch_max = batch_max
        self.workers = max(1, workers)
        self._finals: asyncio.Queue[Job] = asyncio.Queue()
        self._partials: list[Job] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="asr-engine")
        self._tasks: list[asyncio.Task[None]] = []
        self.batches = 0
        self.utterances = 0
        self.busy_s = 0.0

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"asr-recognizer-{i}")
            for i in range(self.workers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def backlog(self) -> int:
        return self._finals.qsize()

    def submit(self, request: Request, *, partial: bool = False) -> asyncio.Future[EngineResult]:
        job = Job(request=request, partial=partial)
        if partial:
            self._partials.append(job)
        else:
            self._finals.put_nowait(job)
        self._wake.set()
        return job.future

    def _take_batch(self) -> list[Job]:
        jobs: list[Job] = []
        while len(jobs) < self.batch_max and not self._finals.empty():
            job = self._finals.get_nowait()
            if not job.future.cancelled():  # a decode-ahead the speaker made void
                jobs.append(job)
        if not jobs and self._partials:
            jobs = self._partials[: self.batch_max]
            del self._partials[: len(jobs)]
        return jobs

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = self._take_batch()
            if not jobs:
                self._wake.clear()
                await self._wake.wait()
                continue
            # one batch may mix languages: each utterance has its own decoder prompt
            started = time.monotonic()
            try:
                results = await loop.run_in_executor(
                    self._executor, self.engine.transcribe_batch, [j.request for j in jobs]
                )
            except Exception as exc:
                logger.exception("asr engine failed on a batch of {}", len(jobs))
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(exc)
                continue
            self.busy_s += time.monotonic() - started
            self.batches += 1
            self.utterances += len(jobs)
            for j, res in zip(jobs, results, strict=True):
                if not j.future.done():
                    j.future.set_result(res)
