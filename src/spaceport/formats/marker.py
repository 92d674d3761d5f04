"""The work marker: ``<work>/.spaceport/`` ties a working copy to its deployment.

It holds the deployment id, the primary it came from, the state index and the logs. It is
never saved to the primary. A save refuses to run without it: a missing marker means the
working volume is not mounted or is the wrong one, and saving an empty folder "back" is how
rsync --delete wiped projects before.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
from dataclasses import asdict, dataclass, field

from ..clock import iso, utcnow
from ..errors import FormatError, RefusedError, VolumeFullError

MARKER_DIR = ".spaceport"
MARKER_FILE = "deployment.json"
INDEX_FILE = "index.sqlite"
# Left by an undeploy that removed the working copy: what was there, and when it ended.
UNDEPLOYED_FILE = "undeployed.json"
MARKER_FORMAT = 1

# Phases of a deployment as the work marker knows them.
DEPLOYING = "deploying"
DEPLOYED = "deployed"
# An undeploy (or a daemon's clean-up) is removing the working copy, all of it proven saved:
# what is missing now was removed by spaceport, not deleted by the user, and no save may
# take it for a deletion on the primary.
REMOVING = "removing"
UNDEPLOYED = "undeployed"


def new_deployment_id() -> str:
    return secrets.token_hex(16)


@dataclass
class Marker:
    deployment_id: str
    primary: str
    status_dir: str
    created: str
    phase: str = DEPLOYING
    format: int = MARKER_FORMAT
    # The working copy's --exclude patterns (spaceport.engine.filters), remembered so that
    # later saves, the daemon and status use them. An older spaceport ignores the field
    # and saves everything: never less than asked.
    exclude: list[str] = field(default_factory=list)

    @property
    def token(self) -> str:
        """Short form of the id carried by temporary file names."""
        return self.deployment_id[:8]


def marker_dir(work: str) -> str:
    return os.path.join(work, MARKER_DIR)


def work_id(work: str) -> str | None:
    """The identity of this working copy's marker folder (its inode): the lock records it,
    and a copy (``cp -a``) of the working copy gets another one."""
    try:
        return str(os.stat(marker_dir(work)).st_ino)
    except FileNotFoundError:
        return None


def index_path(work: str) -> str:
    return os.path.join(marker_dir(work), INDEX_FILE)


def read_marker(work: str) -> Marker | None:
    path = os.path.join(marker_dir(work), MARKER_FILE)
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8", "surrogateescape"))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise FormatError(f"the work marker {path} is damaged ({exc}).",
                          hint="Nothing was changed. If this working copy is still deployed, "
                               "restore the marker from the lock file's deployment_id.") from exc
    if int(data.get("format", 0)) > MARKER_FORMAT:
        raise FormatError(f"the work marker {path} was written by a newer spaceport.",
                          hint="Upgrade spaceport.")
    known = Marker.__dataclass_fields__
    try:
        return Marker(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        raise FormatError(f"the work marker {path} is incomplete ({exc}).") from exc


def write_marker(work: str, marker: Marker) -> None:
    """Write the marker atomically (temporary file, fsync, rename)."""
    folder = marker_dir(work)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, MARKER_FILE)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(json.dumps(asdict(marker), indent=2, ensure_ascii=False)
                    .encode("utf-8", "surrogateescape"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise VolumeFullError(
                f"the working volume is full: the work marker {path} could not be written.",
                hint="It is as it was before. Make room on the working volume, then run the "
                     "same command again.") from None
        raise
    try:  # a deployment again: the record of an earlier undeploy is history
        os.unlink(os.path.join(folder, UNDEPLOYED_FILE))
    except FileNotFoundError:
        pass


def write_undeployed_record(work: str, marker: Marker) -> None:
    """Remember, in place of the marker, that this working copy was undeployed."""
    record = {"undeployed": iso(utcnow()), "primary": marker.primary,
              "deployment_id": marker.deployment_id}
    path = os.path.join(marker_dir(work), UNDEPLOYED_FILE)
    with open(path + ".tmp", "wb") as f:
        f.write(json.dumps(record, indent=2, ensure_ascii=False)
                .encode("utf-8", "surrogateescape"))
    os.replace(path + ".tmp", path)


def read_undeployed_record(work: str) -> dict | None:
    """The record of an undeploy that removed this working copy, or None."""
    try:
        with open(os.path.join(marker_dir(work), UNDEPLOYED_FILE), "rb") as f:
            data = json.loads(f.read().decode("utf-8", "surrogateescape"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_marker_file(work: str) -> None:
    try:
        os.unlink(os.path.join(marker_dir(work), MARKER_FILE))
    except FileNotFoundError:
        pass


def new_marker(primary: str, status_dir: str, *, created: str | None = None) -> Marker:
    """A new deployment; ``created``: when the working copy was first made, if it is an
    earlier deployment's copy, all saved (or to be saved first), that is reused."""
    return Marker(new_deployment_id(), primary, status_dir, created or iso(utcnow()))


def find_working_copy(start: str) -> str | None:
    """The working copy that holds ``start`` (a folder, or a path in one): the nearest
    folder, from ``start`` upwards, with a ``.spaceport/deployment.json``, as git finds its
    repository. The walk stops at a filesystem boundary (a working copy is one volume; a
    mount point's own marker is still found) and at ``/``. None: not inside one."""
    folder = os.path.abspath(start)
    try:
        if not os.path.isdir(folder):
            folder = os.path.dirname(folder) if os.path.lexists(folder) else None
        device = os.stat(folder).st_dev if folder else None
    except OSError:
        return None
    if device is None:
        return None  # a path that does not exist: the caller says so
    while True:
        if os.path.isfile(os.path.join(folder, MARKER_DIR, MARKER_FILE)):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None  # "/": never past it
        try:
            if os.stat(parent).st_dev != device:
                return None  # another filesystem: the working copy is not up there
        except OSError:
            return None
        folder = parent


def require_marker(work: str) -> Marker:
    """The marker, or a refusal (exit 5) that explains the missing-volume danger. Commands
    ask :func:`spaceport.safety.worklock.require_working_copy`, which first refuses with
    exit 4 if a live spaceport process holds the folder (its marker deleted under it)."""
    marker = read_marker(work)
    if marker is None:
        record = read_undeployed_record(work)
        if record is not None:
            raise RefusedError(
                f"{work} was undeployed on {record.get('undeployed', '?')}: its work was "
                f"saved to {record.get('primary', 'its primary')}, and it is no longer a "
                "working copy.",
                hint=f"Nothing was changed. To work on the project again, deploy it: "
                     f"spaceport deploy {record.get('primary', 'PRIMARY')} {work}")
        raise RefusedError(
            f"{work} is not a spaceport working copy (it has no {MARKER_DIR}/{MARKER_FILE}).",
            hint="Nothing was changed. If the working copy is on an unmounted volume, mount "
                 "it and run the command again (spaceport never saves an empty or wrong "
                 "folder over a project). If it was never deployed, deploy it first.")
    return marker
