"""Dynamic batching: concurrent requests merged into one model call, as TensorFlow Serving's batching does.

A request waits at most `timeout_ms` for others to join it; a batch closes when it holds `max_batch_size`
examples or its first request has waited that long. The model runs in one thread outside the event loop, so
requests keep arriving (and batches keep filling) while it computes. A batch that fails on one request's
input is run again request by request, so the bad request gets its error and the others their answers.
"""

import asyncio
import concurrent.futures
import dataclasses
import time


@dataclasses.dataclass(frozen=True)
class BatchOptions:
    """How requests are merged.

    Args:
        enabled: merge concurrent requests (False: each request is one model call of its own).
        max_batch_size: the most examples in one model call.
        timeout_ms: how long a request waits for others to join it.

    Examples:
        >>> BatchOptions(max_batch_size=64, timeout_ms=2)
        >>> BatchOptions(enabled=False)       # one model call per request
    """

    enabled: bool = True
    max_batch_size: int = 32
    timeout_ms: float = 5.0

    def __post_init__(self):
        if not isinstance(self.max_batch_size, int) or self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be a whole number >= 1. Received: {self.max_batch_size!r}")
        if not 0 <= self.timeout_ms <= 10_000:
            raise ValueError(f"timeout_ms must be between 0 and 10000. Received: {self.timeout_ms!r}")


class Batcher:
    """Runs `call(examples) -> {output: array}` on merged requests.

    Args:
        call: the model call on a list of examples (`Servable.run`).
        options: a `BatchOptions`.
        observe: called with each model call's number of examples (metrics).

    Examples:
        >>> batcher = Batcher(servable.run, BatchOptions(max_batch_size=16))
        >>> outputs, rows = await batcher.submit([example])   # in a request handler
    """

    def __init__(self, call, options=BatchOptions(), observe=None):
        self._call = call
        self.options = options
        self._observe = observe or (lambda n: None)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mbm-keras-model")
        self._queue = None
        self._loop_task = None

    async def start(self):
        if self.options.enabled:
            self._queue = asyncio.Queue()
            self._loop_task = asyncio.create_task(self._loop())

    async def stop(self):
        """Finishes every queued request, then stops."""
        if self._loop_task is not None:
            await self._queue.join()
            self._loop_task.cancel()
            self._loop_task = None
        self._executor.shutdown(wait=True)

    async def submit(self, examples):
        """`(outputs, rows)`: the outputs of the model call that held `examples`, and their rows in it."""
        if not self.options.enabled:
            outputs = await asyncio.get_running_loop().run_in_executor(None, self._run, examples)
            return outputs, range(len(examples))
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((examples, future))
        return await future

    def _run(self, examples):
        self._observe(len(examples))
        return self._call(examples)

    async def _loop(self):
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0][0])
            deadline = time.monotonic() + self.options.timeout_ms / 1000
            while size < self.options.max_batch_size:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), left)
                except asyncio.TimeoutError:
                    break
                batch.append(item)
                size += len(item[0])
            try:
                await self._answer(loop, batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _answer(self, loop, batch):
        examples = [e for request, _ in batch for e in request]
        try:
            outputs = await loop.run_in_executor(self._executor, self._run, examples)
        except Exception as error:  # noqa: BLE001 -- handed to the requests below
            if len(batch) == 1:
                _settle(batch[0][1], error=error)
                return
            for request, future in batch:  # one request's bad input: each alone, so only it fails
                try:
                    _settle(future, (await loop.run_in_executor(self._executor, self._run, request),
                                     range(len(request))))
                except Exception as own:  # noqa: BLE001
                    _settle(future, error=own)
            return
        start = 0
        for request, future in batch:
            _settle(future, (outputs, range(start, start + len(request))))
            start += len(request)


def _settle(future, result=None, error=None):
    if future.done():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
