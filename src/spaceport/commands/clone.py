"""Clone: make a folder an exact, read-only, one-way copy of a source (the raw-data space).

The source is only read. A re-run is incremental, as rclone's sync without --checksum: a
file whose size and mtime match is left alone, new and changed files are copied, and what
vanished from the source is removed from the copy. Files and folders of the copy carry no
write bits (people must not edit a copy that the next clone overwrites); a re-run gives a
folder its owner's write bit back only while it changes something in it.

The copy's own state lives in ``<dest>/.spaceport/clone.json``: the source it mirrors and
the token of its temporary names. A non-empty destination without it is refused, since a
clone deletes whatever the source does not have.

Someone may use the copy while it fills (``spaceport run --source-in-background``): a file
appears only complete (copied under a temporary name, renamed into place; one that changes
while it is copied is copied again), folders before their files, the files a project links
to first (:mod:`.clone_first`), then the rest in path order, so that a streaming import sees
them arrive in a stable order; and a notice at the root says the copy is not complete
(:mod:`.clone_notice`). A stopped clone resumes where it was: the copy itself is its index
(size and mtime), so a re-run copies only what is not there yet.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import stat as stat_mod
import threading
import time
from dataclasses import dataclass, field

from ..clock import iso, utcnow
from ..engine.scan import Entry, Kind, ScanResult, scan_tree
from ..engine.transfer import Copier, CopyDone, CopyJob, run_copies
from ..errors import Interrupted, RefusedError, StorageUnavailableError, UsageError
from ..formats.marker import MARKER_DIR
from ..store import PRIMARY_CAPABILITIES, WORK_CAPABILITIES, PosixStore
from ..store.base import parent_of, temp_name
from ..store.posix import mkdir_mode
from ..store.retry import is_unavailable, retry_call, unavailable
from ..wording import count, human_size
from .clone_first import list_needed, make_parents, missing_from
from .clone_notice import NOTICE_NAME, Notice
from .failures import partial_error
from .folders import separate_folders
from .options import Options

log = logging.getLogger(__name__)

CLONE_MARKER = "clone.json"
CLONE_FORMAT = 1
TASK = "clone"
WRITE_BITS = 0o222
# Never part of a clone, on either side: our marker, the notice of a clone under way, and
# the folder that mkfs.ext4 puts at the root of every fresh volume (root's, unreadable to us).
SKIP_TOP = frozenset({MARKER_DIR, NOTICE_NAME, "lost+found"})


def read_only(mode: int) -> int:
    return stat_mod.S_IMODE(mode) & ~WRITE_BITS


@dataclass
class CloneReport:
    files: int = 0
    copied: int = 0
    copied_bytes: int = 0
    current: int = 0
    removed: int = 0
    links_skipped: list[str] = field(default_factory=list)
    special: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class CloneProgress:
    """Where a clone is, for whoever shows it (the daemon's page and /status); written by
    the clone's thread, read by others (single values: no lock needed to read them)."""

    stage: str = "starting"  # needed-first, listing, copying, complete, stopped, failed
    first_files: int = 0  # files the project links to, to copy first
    first_done: int = 0
    files_missing: int | None = None  # known once the source is listed
    bytes_missing: int | None = None


@dataclass
class ClonePlan:
    removals: list[Entry] = field(default_factory=list)  # dest entries, children first
    mkdirs: list[Entry] = field(default_factory=list)  # source dirs missing, parents first
    copies: list[Entry] = field(default_factory=list)  # new or changed source files
    chmods: list[Entry] = field(default_factory=list)  # files equal but for their mode
    dirs: list[Entry] = field(default_factory=list)  # every source dir
    current: int = 0
    links: list[str] = field(default_factory=list)  # source links, not cloned

    @property
    def copy_bytes(self) -> int:
        return sum(e.size for e in self.copies)


def plan_clone(src: ScanResult, dst: ScanResult) -> ClonePlan:
    """What makes ``dst`` equal to ``src``: compare kind, size and mtime, then the mode."""
    plan = ClonePlan()
    wanted: dict[str, Entry] = {}
    for path, entry in src.entries.items():
        if entry.kind is Kind.LINK:
            plan.links.append(path)  # a OneData source has none; a plain folder might
            continue
        wanted[path] = entry
        here = dst.entries.get(path)
        if entry.kind is Kind.DIR:
            plan.dirs.append(entry)
            if here is None or here.kind is not Kind.DIR:
                plan.mkdirs.append(entry)
        elif here is None or here.kind is not Kind.FILE \
                or (here.size, here.mtime_ns) != (entry.size, entry.mtime_ns):
            plan.copies.append(entry)
        elif here.mode != read_only(entry.mode):
            plan.chmods.append(entry)
        else:
            plan.current += 1
    for path, here in dst.entries.items():
        source = wanted.get(path)
        if (source is None or source.kind is not here.kind) and not src.under_unreadable(path):
            plan.removals.append(here)
    plan.removals.sort(key=lambda e: (-e.path.count("/"), e.path))
    plan.mkdirs.sort(key=lambda e: (e.path.count("/"), e.path))
    return plan


class ReadOnlyCopy(PosixStore):
    """The destination store: files land without write bits, set through the descriptor
    before the rename, so no extra call per file and no moment with a writable file."""

    def commit_temp(self, fd, tmp, rel, *, mode, mtime_ns):
        return super().commit_temp(fd, tmp, rel, mode=None if mode is None else read_only(mode),
                                   mtime_ns=mtime_ns)


def check_clone_paths(source: str, dest: str) -> tuple[str, str]:
    return separate_folders(source, dest, ("source", "destination"))


def _marker_path(dest: str) -> str:
    return os.path.join(dest, MARKER_DIR, CLONE_MARKER)


def read_clone_marker(dest: str) -> dict | None:
    try:
        with open(_marker_path(dest), "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        return None
    except ValueError:
        return {}  # damaged: still ours (a fresh token is made), never a reason to refuse
    if int(data.get("format", 0)) > CLONE_FORMAT:
        raise UsageError(f"{_marker_path(dest)} was written by a newer spaceport; upgrade.")
    return data


def write_clone_marker(dest: str, data: dict) -> None:
    folder = os.path.join(dest, MARKER_DIR)
    os.makedirs(folder, exist_ok=True)
    tmp = _marker_path(dest) + f".tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, _marker_path(dest))


def _claim_destination(source: str, dest: str) -> dict:
    """The clone marker, created on an empty destination; a foreign non-empty one refused."""
    os.makedirs(dest, exist_ok=True)
    marker = read_clone_marker(dest)
    if marker is None:
        with os.scandir(dest) as it:
            others = sorted(e.name for e in it if e.name not in SKIP_TOP)
        if others:
            raise RefusedError(
                f"{dest} is not empty and was not made by spaceport clone "
                f"(it holds {', '.join(others[:3])}{'…' if len(others) > 3 else ''}).",
                hint="Nothing was changed. A clone removes everything the source does not "
                     "have: give an empty folder, or one an earlier clone made.")
        marker = {}
    if marker.get("source") and marker["source"] != source:
        log.warning("%s was a clone of %s; it now becomes a clone of %s", dest,
                    marker["source"], source)
    token = marker.get("token") or secrets.token_hex(4)
    marker = {"format": CLONE_FORMAT, "source": source, "token": token,
              "created": marker.get("created") or iso(utcnow()),
              "last_clone": marker.get("last_clone")}
    write_clone_marker(dest, marker)
    return marker


def _open_source(path: str, opts: Options) -> PosixStore:
    try:
        return retry_call(opts.retry, PosixStore, path, PRIMARY_CAPABILITIES,
                          temp_token="00000000", what=f"open {path}")
    except FileNotFoundError:
        raise StorageUnavailableError(f"the source folder {path} does not exist.",
                                      hint="Is the OneData space mounted? Nothing was "
                                           "changed.") from None
    except NotADirectoryError:
        raise UsageError(f"the source {path} is not a folder.") from None
    except OSError as exc:
        raise unavailable(exc, path) from exc


def guard_mass_delete(plan: ClonePlan, dst: ScanResult, opts: Options, allow: bool) -> None:
    """A source that looks empty is more often an unmounted space than a deleted one."""
    gone = sum(1 for e in plan.removals if e.kind is Kind.FILE)
    total = dst.files
    if not allow and gone and gone / total > opts.mass_delete_threshold:
        raise RefusedError(
            f"this clone would remove {gone} of the {total} files of the copy "
            f"({gone / total:.0%}, more than {opts.mass_delete_threshold:.0%}).",
            hint="Nothing was changed. Check that the source is mounted and complete; if "
                 "the files really went away, run the clone with --allow-mass-delete.")


def clone(source: str, dest: str, opts: Options, *, stop: threading.Event | None = None,
          allow_mass_delete: bool = False, first: list[str] | tuple[str, ...] = (),
          watch: str | None = None, progress: CloneProgress | None = None) -> CloneReport:
    """Make ``dest`` a read-only copy of ``source``. See the module docstring.

    ``first``: source paths (files or folders) copied before the source is listed (what a
    project links to). ``watch``: where the notice at the copy's root tells people to watch
    the progress. ``progress`` is kept up to date for others to read."""
    started = time.monotonic()
    source, dest = check_clone_paths(source, dest)
    stop = stop or threading.Event()
    progress = progress or CloneProgress()
    with _open_source(source, opts) as src:
        marker = _claim_destination(source, dest)
        notice = Notice(dest, source, watch)
        if not marker.get("last_clone"):  # never complete: say so from the first second
            notice.say("The copy is under way.")
        try:
            with ReadOnlyCopy(dest, WORK_CAPABILITIES, temp_token=marker["token"]) as dst:
                report = CloneReport()
                copier = Copier(src, dst, tracker=opts.tracker, task=TASK, retry=opts.retry,
                                stop=stop)
                head = _clone_first(copier, first, opts, report, progress, notice)
                progress.stage = "listing"
                sscan = scan_tree(src, skip_top=SKIP_TOP, jobs=opts.jobs, stop=stop)
                dscan = scan_tree(dst, skip_top=SKIP_TOP, temp_token=marker["token"],
                                  jobs=min(opts.jobs, 4), stop=stop)
                plan = plan_clone(sscan, dscan)
                guard_mass_delete(plan, dscan, opts, allow_mass_delete)
                for path in plan.links:
                    log.warning("not cloning %s: it is a symbolic link", path)
                report.files = len(plan.copies) + len(plan.chmods) + plan.current
                report.current = max(0, plan.current - head)
                report.links_skipped, report.special = plan.links, sscan.special
                run = _CloneRun(src, dst, dscan, plan, opts, report, stop, copier, progress,
                                notice)
                # Folders of the source that could not be listed: what is below them in the
                # copy is kept as it was, and the clone reports itself incomplete.
                run.failed.extend((path or ".", exc) for path, exc in sscan.unreadable.items())
                run.execute()
        except Interrupted:
            progress.stage = "stopped"
            notice.say("The copy was stopped; it goes on where it stopped when it is started "
                       "again.", files=progress.files_missing, nbytes=progress.bytes_missing)
            raise
        except BaseException as exc:
            progress.stage = "failed"
            if notice.written:  # a refusal that changed nothing leaves a complete copy be
                notice.say(f"The copy failed: {exc}", files=progress.files_missing,
                           nbytes=progress.bytes_missing)
            raise
    marker["last_clone"] = iso(utcnow())
    write_clone_marker(dest, marker)
    progress.stage, progress.files_missing, progress.bytes_missing = "complete", 0, 0
    notice.remove()
    report.seconds = time.monotonic() - started
    return report


def _clone_first(copier: Copier, paths, opts: Options, report: CloneReport,
                 progress: CloneProgress, notice: Notice) -> int:
    """The files ``paths`` name, copied before anything else; returns how many were copied."""
    if not paths:
        return 0
    progress.stage = "needed-first"
    src, dst = copier.src, copier.dst
    needed = list_needed(src, list(paths), SKIP_TOP, copier.stop)
    todo = make_parents(dst, missing_from(dst, needed, read_only))
    progress.first_files = len(todo)
    notice.say("The copy is under way.", first=len(todo))
    log.info("cloning first the %s the project links to (%s)", count(len(todo), "file"),
             human_size(sum(n.size for n in todo)))
    token = dst.temp_token
    jobs = [CopyJob(n.path, n.size, temp_name(token)) for n in todo]
    opts.tracker.start(TASK, files=len(jobs), nbytes=sum(n.size for n in todo))
    failed: list[tuple[str, BaseException]] = []

    def on_done(done: CopyDone) -> None:
        if done.error is not None:
            failed.append((done.job.path, done.error))
            return
        if not done.vanished:
            progress.first_done += 1
            report.copied += 1
            report.copied_bytes += done.src_st.st_size

    try:
        run_copies(copier, iter(jobs), opts.jobs, on_done)
    finally:
        opts.tracker.finish(TASK)
    for path, exc in failed:
        if is_unavailable(exc):
            raise unavailable(exc, src.root)
        if isinstance(exc, Interrupted) or copier.stop.is_set():
            raise Interrupted("the clone was stopped; a re-run continues where it stopped")
        # Any other failure is tried again by the ordinary pass, which reports it.
        log.warning("could not clone %s first: %s; the ordinary pass tries again", path, exc)
    return progress.first_done


class _CloneRun:
    def __init__(self, src, dst, dscan, plan, opts, report, stop, copier, progress, notice):
        self.src, self.dst, self.dscan, self.plan = src, dst, dscan, plan
        self.opts, self.report, self.stop = opts, report, stop
        self.copier, self.progress, self.notice = copier, progress, notice
        # The mode each destination folder has now; the final pass makes them read-only.
        self.modes = {p: e.mode for p, e in dscan.entries.items() if e.kind is Kind.DIR}
        self.failed: list[tuple[str, BaseException]] = []

    def execute(self) -> None:
        try:
            self._open_folders()
            self._remove()
            for entry in self.plan.mkdirs:
                self.dst.mkdir(entry.path, entry.mode | 0o700)
                self.modes[entry.path] = mkdir_mode(entry.mode)
            self._copy()
            for entry in self.plan.chmods:
                self.dst.chmod(entry.path, read_only(entry.mode))
        finally:
            self._close_folders()
        self._raise_failures()

    def _open_folders(self) -> None:
        """Give the owner's write bit back to each folder this run changes something in."""
        plan = self.plan
        touched = {parent_of(e.path) for e in plan.removals + plan.mkdirs + plan.copies}
        touched |= {e.path for e in plan.removals if e.kind is Kind.DIR}
        touched |= {parent_of(t) for t in self.dscan.temps}
        for path in sorted(touched - {""}, key=lambda p: p.count("/")):
            mode = self.modes.get(path)
            if mode is not None and not mode & stat_mod.S_IWUSR:
                self.dst.chmod(path, mode | stat_mod.S_IWUSR)
                self.modes[path] = mode | stat_mod.S_IWUSR
        for tmp in self.dscan.temps:  # a killed clone's leftovers
            self.dst.unlink(tmp)

    def _remove(self) -> None:
        for entry in self.plan.removals:
            try:
                if entry.kind is Kind.DIR:
                    self.dst.rmdir(entry.path)
                    self.modes.pop(entry.path, None)
                else:
                    self.dst.unlink(entry.path)
            except FileNotFoundError:
                pass
            self.report.removed += 1

    def _copy(self) -> None:
        """In path order (a streaming import sees files arrive in a stable order); each file
        is whole when it appears (the copier's temporary and rename)."""
        plan, tracker, token, progress = self.plan, self.opts.tracker, self.dst.temp_token, \
            self.progress
        jobs = [CopyJob(e.path, e.size, temp_name(token))
                for e in sorted(plan.copies, key=lambda e: e.path)]
        progress.stage = "copying"
        progress.files_missing, progress.bytes_missing = len(jobs), plan.copy_bytes
        if jobs or plan.mkdirs or plan.removals or self.notice.written:
            self.notice.say("The copy is under way.", files=len(jobs),
                            nbytes=plan.copy_bytes, first=progress.first_files)
        tracker.start(TASK, files=len(jobs), nbytes=plan.copy_bytes)
        results = [0]

        def on_done(done: CopyDone) -> None:
            results[0] += 1
            if done.error is not None:
                self.failed.append((done.job.path, done.error))
                if not isinstance(done.error, Interrupted):
                    log.error("could not clone %s: %s", done.job.path, done.error)
                return
            progress.files_missing -= 1
            progress.bytes_missing -= done.job.size
            self.notice.say("The copy is under way.", files=progress.files_missing,
                            nbytes=max(0, progress.bytes_missing), first=progress.first_files,
                            force=False)
            if done.vanished:
                return
            self.report.copied += 1
            self.report.copied_bytes += done.src_st.st_size

        try:
            run_copies(self.copier, iter(jobs), self.opts.jobs, on_done)
        finally:
            tracker.finish(TASK)
        if results[0] < len(jobs) and self.stop.is_set():
            raise Interrupted("the clone was stopped; a re-run continues where it stopped")

    def _close_folders(self) -> None:
        """Folders end read-only, deepest first; the root is left as it is (often a mount
        point that belongs to someone else)."""
        for entry in sorted(self.plan.dirs, key=lambda e: -e.path.count("/")):
            want = read_only(entry.mode)
            if self.modes.get(entry.path, want) != want:
                try:
                    self.dst.chmod(entry.path, want)
                except OSError as exc:
                    log.warning("could not make %s read-only: %s", entry.path, exc)

    def _raise_failures(self) -> None:
        for _, exc in self.failed:
            if isinstance(exc, Interrupted):
                raise exc
        for _, exc in self.failed:
            if is_unavailable(exc):
                raise unavailable(exc, self.src.root)
        if self.failed:
            raise partial_error("clone", self.failed,
                                "The source was not changed; what was copied is kept. Run the "
                                "clone again to retry the rest.")


def wipe_clone(dest: str) -> None:
    """Remove everything a clone made (read-only folders included) but ``dest`` itself and
    the volume's lost+found."""
    for dirpath, dirnames, _ in os.walk(dest):
        if dirpath == dest:
            dirnames[:] = [d for d in dirnames if d != "lost+found"]
        for name in dirnames:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if stat_mod.S_ISDIR(mode) and not mode & stat_mod.S_IWUSR:
                os.chmod(path, stat_mod.S_IMODE(mode) | stat_mod.S_IWUSR)
    with os.scandir(dest) as it:
        for entry in it:
            if entry.name == "lost+found":
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
