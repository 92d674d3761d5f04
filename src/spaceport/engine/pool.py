"""A bounded pool of worker threads for calls on a storage: the copies of a save or a
stage-in, and storage calls that are each a network round trip on OneData (folders to
create, files to move to the trash). Results are handed back in the calling thread."""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Sized, TypeVar

from ..errors import Interrupted

log = logging.getLogger(__name__)

_WORKER_DONE = object()  # a worker's last message; also the end of its items
T = TypeVar("T")
R = TypeVar("R")


def run_parallel(fn: Callable[[T], R], items: Iterable[T], workers: int,
                 on_done: Callable[[T, R | None, Exception | None], None], *,
                 name: str = "storage") -> None:
    """Call ``fn(item)`` for every item on up to ``workers`` threads: storage calls that are
    each a network round trip on OneData (folders to create, files to move to the trash).

    ``on_done(item, result, error)`` runs in this thread as each call ends (``error`` is
    what ``fn`` raised, or None). If ``on_done`` raises, no further call starts; the calls
    under way end and are handed to ``on_done`` as well, then the exception propagates.
    """
    stop = threading.Event()

    def call(item: T) -> tuple[T, R | None, Exception | None]:
        if stop.is_set():
            return item, None, Interrupted("stopped before it was done")
        try:
            return item, fn(item), None
        except Exception as exc:  # noqa: BLE001 - handed to on_done with its item
            return item, None, exc

    run_pool(items, workers, call, lambda result: on_done(*result), stop, name)


def run_pool(items: Iterable, workers: int, call: Callable, deliver: Callable,
              stop: threading.Event, name: str) -> None:
    """The worker pool under :func:`run_parallel` and the copier's ``run_copies``:
    ``deliver(call(item))`` for each item, ``deliver`` always in the calling thread.

    Workers take the next item themselves and hand results back through a queue: no future
    per item, nothing waits on a set of futures (with 10^5 small files that bookkeeping
    costs as much CPU as the copies). Once ``stop`` is set, each worker hands over one more
    item (``call`` reports it as not done) and ends, so the caller learns the run was cut.
    On any exception in this thread (KeyboardInterrupt included) ``stop`` is set, the calls
    under way end and their results are delivered, then the exception propagates.
    """
    if isinstance(items, Sized):
        workers = min(workers, len(items))  # a folder level of 3 needs 3 threads, not 32
    source, take = iter(items), threading.Lock()
    results: queue.SimpleQueue = queue.SimpleQueue()

    def work() -> None:
        try:
            while True:
                with take:
                    item = next(source, _WORKER_DONE)
                if item is _WORKER_DONE:
                    return
                stopped = stop.is_set()
                results.put(call(item))  # after a stop, call() reports the item as not done
                if stopped:
                    return  # one such report per worker tells the caller the run was cut
        except BaseException as exc:  # noqa: BLE001 - a bug: calls return their errors
            stop.set()
            results.put(_Failure(exc))
        finally:
            results.put(_WORKER_DONE)

    threads = [threading.Thread(target=work, name=f"{name}-{n}", daemon=True)
               for n in range(max(1, workers))]
    ended = 0
    try:
        # Started inside the try: a signal (SIGTERM is a KeyboardInterrupt here) that lands
        # while the second worker starts must still stop the first and wait for it, or the
        # process ends with that worker's copy half-written (a temporary left behind).
        for thread in threads:
            thread.start()
        while ended < len(threads):
            result = results.get()
            if result is _WORKER_DONE:
                ended += 1
            elif isinstance(result, _Failure):
                raise result.error
            else:
                deliver(result)
    except BaseException:
        stop.set()
        # The workers that began (a start cut short may have begun its thread; one not yet
        # counted here sees the stop before it touches anything).
        started = sum(1 for thread in threads if thread.ident is not None)
        while ended < started:  # calls in flight end soon (copies within a chunk); record them
            result = results.get()
            if result is _WORKER_DONE:
                ended += 1
            elif not isinstance(result, _Failure):
                try:
                    deliver(result)
                except Exception as exc:  # noqa: BLE001 - the first error is the one raised
                    log.debug("after an error, handing over a result failed too: %s", exc)
        raise


@dataclass
class _Failure:
    error: BaseException
