"""Following a job container's output without blocking the event loop.

docker-py's log stream is a blocking iterator. :func:`follow_container` reads it in a thread of its own
(not the engine's worker pool, which a long-running stream per job would exhaust) and hands the chunks
to the event loop; closing the async generator closes the stream, which ends the thread.

Callers: ``JobManager.watch`` (tees the output into ``job.log`` while the job runs) and
``JobManager.follow`` (the REST ``GET jobs/<id>/log?follow=1`` and ``jupyter ptcuda jobs logs -f``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from .engine import Engine


def _close(stream: Any) -> None:
    try:
        stream.close()
    except Exception:  # noqa: BLE001 - already closed, or the connection is gone
        pass


async def follow_container(engine: Engine, container: str,
                           sink: Callable[[bytes], None] | None = None) -> AsyncIterator[bytes]:
    """The container's output (stdout and stderr, in order, from the start) until it exits.

    ``sink`` is called with every chunk in the reading thread (the tee writes the log file there).
    Raises NotFound when the container does not exist.
    """
    loop = asyncio.get_running_loop()
    stream = await asyncio.to_thread(engine.stream_logs, container)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def put(item: bytes | None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def pump() -> None:
        try:
            for chunk in stream:
                if sink is not None:
                    sink(chunk)
                put(chunk)
        except Exception:  # noqa: BLE001 - a broken stream ends the follow; callers inspect the container
            pass
        finally:
            put(None)

    threading.Thread(target=pump, name=f"ptcuda-log-{container[:12]}", daemon=True).start()
    try:
        while (chunk := await queue.get()) is not None:
            yield chunk
    finally:
        _close(stream)
