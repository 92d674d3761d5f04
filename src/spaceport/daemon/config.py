"""What ``spaceport run`` was told: the folders, the interval, the deadline, and the files
it writes for others to watch (the ready file, the instance-status file, the port file)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import UsageError


@dataclass
class DaemonConfig:
    primary: str
    work: str
    source: str | None = None
    source_work: str | None = None
    # Ready once the project is in; the source's clone goes on behind it (issue 22).
    source_in_background: bool = False
    interval: float = 300.0
    final_save_deadline: float = 600.0
    keep_work: bool = False
    take_over_stale: bool = False
    ready_file: str | None = None
    instance_status_file: str | None = None  # "ok" once ready: CERIT's desktop waits for it
    linger: float = 0.0  # keep serving the page this long after a failure
    # --wait-for-lock: seconds to wait for a primary held by another deployment (or CERIT's
    # app) instead of refusing it (exit 3); 0 refuses at once, inf waits until it is free.
    wait_for_lock: float = 0.0
    lock_retry: float = 10.0  # seconds between two looks at the lock while waiting


def check_layout(cfg: DaemonConfig) -> None:
    """The four folders must be apart: a clone into the project's working copy would
    delete the project from it."""
    named = [(n, os.path.realpath(p)) for n, p in (("--primary", cfg.primary),
             ("--work", cfg.work), ("--source", cfg.source), ("--source-work", cfg.source_work))
             if p]
    for i, (name_a, a) in enumerate(named):
        for name_b, b in named[i + 1:]:
            if {name_a, name_b} == {"--primary", "--source"}:
                continue  # reading both from one space is fine
            if a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/"):
                raise UsageError(f"{name_a} {a} and {name_b} {b} overlap; give separate "
                                 "folders.")


def write_file_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def remove_file(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
