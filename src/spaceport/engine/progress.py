"""Progress of long copies: bytes and files, with rate and ETA.

The engine reports into a :class:`Tracker`, which keeps the numbers (the daemon serves them
over HTTP); :class:`RichTracker` also draws them as rich progress bars on a terminal.
Workers call ``advance`` from many threads, so every update takes a lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import TYPE_CHECKING

from ..wording import human_size
from .bandwidth import RateLimit

if TYPE_CHECKING:  # rich's live widgets cost 50 ms to import: only a terminal's bars need them
    from rich.console import Console
    from rich.progress import Progress, TaskID


@dataclass
class TaskState:
    name: str
    files_total: int = 0
    bytes_total: int = 0
    files_done: int = 0
    bytes_done: int = 0
    started: float = field(default_factory=time.time)
    finished: float | None = None

    @property
    def rate(self) -> float:
        """Bytes per second so far."""
        elapsed = (self.finished or time.time()) - self.started
        return self.bytes_done / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        if self.finished or self.rate <= 0 or self.bytes_total <= self.bytes_done:
            return None
        return (self.bytes_total - self.bytes_done) / self.rate

    def as_dict(self) -> dict:
        return {**asdict(self), "rate": self.rate, "eta": self.eta}


class Tracker:
    """Keeps the state of every task; thread-safe. ``limit``: the bytes reported are held
    to a rate (``--bwlimit``, spaceport.engine.bandwidth): the copying thread sleeps here."""

    def __init__(self, limit: RateLimit | None = None):
        self._lock = threading.Lock()
        self.tasks: dict[str, TaskState] = {}
        self.limit = limit if limit is not None else RateLimit(None)

    def start(self, name: str, *, files: int, nbytes: int) -> None:
        with self._lock:
            self.tasks[name] = TaskState(name, files_total=files, bytes_total=nbytes)

    def advance(self, name: str, *, files: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            task = self.tasks.get(name)
            if task:
                task.files_done += files
                task.bytes_done += nbytes
        self.limit.take(nbytes)

    def finish(self, name: str) -> None:
        with self._lock:
            task = self.tasks.get(name)
            if task and task.finished is None:
                task.finished = time.time()

    def snapshot(self) -> list[dict]:
        with self._lock:
            return [t.as_dict() for t in self.tasks.values()]

    def close(self) -> None:
        """Stop drawing (if drawing); the numbers stay readable."""


@cache
def _size_columns() -> tuple[type, type]:
    """The two columns of spaceport's own units, made (and rich imported) on first use."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class SizeColumn(ProgressColumn):
        """"12.0 MiB/1.2 GiB": the units of every size spaceport shows (wording.human_size),
        not rich's decimal kB and MB."""

        def render(self, task) -> Text:
            return Text(f"{human_size(task.completed)}/{human_size(task.total or 0)}",
                        style="progress.download")

    class RateColumn(ProgressColumn):
        """"3.1 MiB/s", in the same units."""

        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("?" if speed is None else f"{human_size(speed)}/s",
                        style="progress.data.speed")

    return SizeColumn, RateColumn


class RichTracker(Tracker):
    """A tracker that also shows rich progress bars (on stderr).

    A live display is started when a task starts and stopped when no task is running, so
    other output (a status, a message) never fights with the bars.
    """

    def __init__(self, console: Console | None = None, limit: RateLimit | None = None):
        super().__init__(limit)
        if console is None:
            from rich.console import Console
            console = Console(stderr=True)
        self.console = console
        self.progress: Progress | None = None
        self._ids: dict[str, TaskID] = {}

    def _new_progress(self) -> Progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
        size_column, rate_column = _size_columns()
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            size_column(),
            TextColumn("{task.fields[files]} files"),
            rate_column(),
            TimeRemainingColumn(),
            console=self.console,
        )

    def start(self, name: str, *, files: int, nbytes: int) -> None:
        super().start(name, files=files, nbytes=nbytes)
        if self.progress is None:
            self.progress = self._new_progress()
            self.progress.start()
            self._ids = {}
        self._ids[name] = self.progress.add_task(name, total=max(nbytes, 1), files=f"0/{files}")

    def advance(self, name: str, *, files: int = 0, nbytes: int = 0) -> None:
        super().advance(name, files=files, nbytes=nbytes)
        task = self.tasks.get(name)
        if self.progress is not None and name in self._ids and task:
            self.progress.update(self._ids[name], advance=nbytes,
                                 files=f"{task.files_done}/{task.files_total}")

    def finish(self, name: str) -> None:
        super().finish(name)
        if self.progress is None or name not in self._ids:
            return
        task_id = self._ids.pop(name)
        self.progress.update(task_id, completed=self.progress.tasks[task_id].total)
        if not self._ids:
            self.close()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
