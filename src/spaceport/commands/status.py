"""Looking without touching: ``status`` of a working copy or a primary, and ``verify``.

Status reads the lock and the index; the pending changes come from a scan of the working
copy alone. Verify is the one command that reads the whole primary, on purpose: it answers
"is everything really there?" (sizes, and contents with --checksum).
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..engine.content import same_content, scratch_snapshots, snapshot_size
from ..engine.filters import compile_excludes
from ..engine.plan import unsaved_summary
from ..engine.scan import Kind, scan_tree
from ..engine.snapshot import fold_companions
from ..errors import FormatError, SpaceportError, StorageUnavailableError
from ..formats.cerit import CERIT_DIR, CERIT_LOCK, SYMLINK_DUMP_NAME, dump_digest
from ..formats.journal import read_tail
from ..formats.legacy import (
    TOP_LEVEL_NAMES,
    LegacyLock,
    RootUnknown,
    last_system,
    legacy_lists,
    parse_cerit_lock,
    read_legacy_links,
)
from ..formats.links import MANIFEST_NAME, read_manifest_full, resolve_target
from ..formats.marker import (
    DEPLOYING,
    MARKER_DIR,
    MARKER_FILE,
    index_path,
    marker_dir,
    read_marker,
    read_undeployed_record,
)
from ..formats.statusfile import StatusFileError
from ..formats.trash import list_batches
from ..safety.deletion_guard import held_summary
from ..safety.lock import (
    LockInfo,
    UnreadableLock,
    provably_gone,
    read_heartbeat,
    read_lock,
)
from ..safety.worklock import DAEMON_COMMAND, refuse_if_kept, require_working_copy, who_holds
from ..store.base import Store, join
from ..store.retry import is_unavailable, unavailable
from ..store.sides import open_primary, open_work
from ..wording import count, duration, human_size, quote, show_path
from .deploy.linksource import links_to_restore, with_primary_links
from .options import Options
from .workcopy import look_at_index, pending_changes


def lock_facts(holder, store: Store, status_dir: str) -> dict | None:
    """What a person or a script should know of a lock. Whether it is stale is not judged
    here: that takes watching its heartbeat (``spaceport unlock`` does), except when its
    process is provably gone on this very machine."""
    if holder is None:
        return None
    if isinstance(holder, LockInfo):
        beat = read_heartbeat(store, status_dir, holder.deployment_id)
        return {"kind": "spaceport", "format": holder.format,
                "deployment_id": holder.deployment_id, "host": holder.host,
                "instance": holder.instance, "pid": beat.pid if beat else holder.pid,
                "user": holder.user, "work": holder.work, "created": holder.created,
                "live": holder.live,
                "heartbeat": beat.time if beat else holder.heartbeat,
                "stale": provably_gone(store, status_dir, holder),
                "last_save": beat.last_save if beat else holder.last_save,
                "description": holder.describe(beat)}
    if isinstance(holder, LegacyLock):
        return holder.facts()
    assert isinstance(holder, UnreadableLock)
    return {"kind": "unreadable", "file": holder.file, "error": holder.error,
            "description": holder.describe()}


def work_status(work_path: str, opts: Options) -> dict:
    work_path = os.path.abspath(work_path)
    marker = read_marker(work_path)
    if marker is None:
        refuse_if_kept(work_path)  # a daemon's marker deleted under it: exit 4, not "not one"
        record = read_undeployed_record(work_path)
        if not os.path.isdir(work_path):
            why = "does not exist"
        elif record is not None:
            why = (f"is no longer a working copy: it was undeployed on "
                   f"{record.get('undeployed', '?')}, and its work saved to "
                   f"{record.get('primary', 'its primary')}")
        else:
            why = (f"is not a spaceport working copy (it has no {MARKER_DIR}/{MARKER_FILE}); "
                   "if it should be one, check that its volume is mounted")
        return {"work": work_path, "deployed": False, "message": why}
    facts: dict = {"work": work_path, "primary": marker.primary, "phase": marker.phase,
                   "deployment_id": marker.deployment_id, "status_dir": marker.status_dir,
                   "exclude": list(marker.exclude)}
    # Who keeps it: a daemon for its whole life, or a command running now. A deploy that
    # is marked as under way while nobody holds the copy was interrupted.
    holder = facts["kept_by"] = who_holds(work_path)
    facts["deploy_interrupted"] = marker.phase == DEPLOYING and (
        holder is None or holder.get("command") not in ("deploy", DAEMON_COMMAND))
    index = look_at_index(work_path)
    try:
        facts["last_save"] = index.get_meta("last_save")
        facts["known_entries"] = index.count()
        facts["held_deletions"] = held_summary(index)
    finally:
        index.close()
    try:
        with open_primary(marker.primary, marker.token, opts) as primary:
            holder = read_lock(primary, marker.status_dir)
            facts["lock"] = lock_facts(holder, primary, marker.status_dir)
        facts["lock_is_ours"] = isinstance(holder, LockInfo) and \
            holder.deployment_id == marker.deployment_id
    except (SpaceportError, OSError) as exc:
        facts["lock"] = None
        facts["lock_error"] = str(exc)
        facts["lock_is_ours"] = None
        if isinstance(exc, StorageUnavailableError) or is_unavailable(exc):
            # Said in words, and the exit code says it too (6): what follows (the unsaved
            # changes) is read from the working copy alone.
            error = exc if isinstance(exc, StorageUnavailableError) else \
                unavailable(exc, marker.primary)
            facts["primary_unreachable"] = facts["lock_error"] = (
                f"{error.message} Check the mount (oneclient), then look again; below, what "
                "the working copy alone shows.")
    facts["special"] = []
    facts["pending"] = pending_changes(work_path, marker, facts["special"]).summary()
    return facts


def primary_status(primary_path: str, opts: Options) -> dict:
    status_dir = opts.status_dir
    facts: dict = {"primary": os.path.abspath(primary_path), "status_dir": status_dir}
    with open_primary(primary_path, "00000000", opts) as primary:
        facts["lock"] = lock_facts(read_lock(primary, status_dir), primary, status_dir)
        manifest = None
        try:
            manifest = read_manifest_full(primary, status_dir)
            facts["manifest_links"] = None if manifest is None else len(manifest.links)
        except (FormatError, StatusFileError) as exc:
            # There is one, but it cannot be used: never shown as "none yet".
            facts["manifest_links"] = None
            facts["manifest_error"] = str(exc)  # names it, says why and what to do
        facts.update(legacy_facts(primary, status_dir, opts, manifest,
                                  "manifest_error" in facts))
        try:
            facts["recent_saves"] = read_tail(primary, status_dir)
        except StatusFileError as exc:
            facts["recent_saves"], facts["journal_error"] = [], str(exc)
        record = held_record(facts["recent_saves"])
        facts["held_on_primary"] = record["held"] if record else None
        facts["trash"] = [{"batch": b.name, "files": b.files, "bytes": b.bytes}
                          for b in list_batches(primary, status_dir)]
    return facts


def legacy_facts(primary: Store, status_dir: str, opts: Options, manifest,
                 manifest_damaged: bool) -> dict:
    """The old tools' traces in a space: which one used it last, and what an import does
    (without a manifest) or which links were left out (recorded in the manifest)."""
    facts: dict = {"legacy_link_lists": [rel for rel, _ in legacy_lists(primary, status_dir)]}
    last = last_system(primary, status_dir, _spaceports_own(primary, status_dir, manifest))
    facts["old_system"] = None if last is None else {
        "system": last[0], "file": last[1], "written": iso_time(last[2])}
    if manifest is not None:
        facts["imported_from"] = manifest.imported_from
        facts["not_restored"] = [str(u) for u in manifest.refused + manifest.unrestored]
    elif facts["legacy_link_lists"] and not manifest_damaged:
        try:
            found = read_legacy_links(primary, status_dir, opts.legacy_root)
            facts["legacy_import"] = {**found.as_dict(), "plan": found.describe()}
        except RootUnknown as exc:
            facts["legacy_import_error"] = (f"{exc}; a deploy is refused until it is given "
                                            "--legacy-root")
    return facts


def _spaceports_own(primary: Store, status_dir: str, manifest):
    """Which of the old tools' files say nothing of their use: once spaceport has saved the
    space (a manifest), a file older than that manifest, and what spaceport writes itself
    for CERIT's app (the dump its manifest names, the folder of CERIT's lock holding
    nothing or only spaceport's mirror). Without this a space spaceport keeps for CERIT's
    app would be shown as last used by CERIT's app."""
    try:
        saved = None if manifest is None else \
            primary.lstat(join(status_dir, MANIFEST_NAME)).st_mtime
    except FileNotFoundError:
        saved = None

    def mine(rel: str, mtime: float) -> bool:
        if saved is None:
            return False
        if mtime <= saved:
            return True
        if rel == SYMLINK_DUMP_NAME:
            return dump_digest(primary.read_bytes(rel)) == manifest.cerit_dump
        if rel == CERIT_DIR:
            try:
                raw = primary.read_bytes(CERIT_LOCK)
            except FileNotFoundError:
                return True  # emptied by spaceport's release (CERIT's app leaves a dump)
            except IsADirectoryError:
                return False
            return parse_cerit_lock(CERIT_LOCK, raw).mirror_of is not None
        return False
    return mine


def iso_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def format_status(facts: dict) -> str:
    """The status as lines a person reads."""
    lines = []
    if "work" in facts:
        lines.append(f"working copy  {facts['work']}")
        if not facts.get("deployed", True):
            return "\n".join(lines + [f"              {facts['message']}"])
        lines += [f"primary       {facts['primary']}",
                  f"phase         {facts['phase']}  (deployment {facts['deployment_id'][:8]})"]
        lines += _keeper_lines(facts)
        lines.append(f"last save     {facts.get('last_save') or 'never'}")
        if facts.get("exclude"):
            lines.append(f"excluded      {' '.join(quote(p) for p in facts['exclude'])}  "
                         "(neither saved nor deleted on the primary)")
    else:
        lines.append(f"primary       {facts['primary']}")
    lock = facts.get("lock")
    if lock is None:
        lines.append(f"lock          {facts.get('lock_error') or 'none (not deployed)'}")
    else:
        lines.append(f"lock          {lock['description']}")
        if lock.get("stale"):
            lines.append(f"              looks STALE: {lock['stale']}")
        if "lock_is_ours" in facts:
            ours = "held" if facts["lock_is_ours"] else "NOT held"
            lines.append(f"              {ours} by this working copy")
    pending = facts.get("pending")
    if pending is not None:
        lines += _unsaved_lines(pending, bool(facts.get("deploy_interrupted")))
    lines += held_lines(facts)
    if "recent_saves" in facts:
        links = facts.get("manifest_links")
        if facts.get("manifest_error"):  # it exists: unreadable or damaged, said as such
            lines += [("manifest      " if i == 0 else "              ") + text
                      for i, text in enumerate(facts["manifest_error"].splitlines())]
        else:
            lines.append("manifest      " + ("none yet (no links.jsonl)" if links is None
                                             else count(links, "link")))
        lines += _legacy_lines(facts)
        if facts.get("journal_error"):
            lines.append(f"saved         {facts['journal_error']}")
        lines += journal_lines(facts["recent_saves"])
        for batch in facts["trash"]:
            lines.append(f"trash         {batch['batch']}  {count(batch['files'], 'file')}, "
                         f"{human_size(batch['bytes'])}")
    return "\n".join(lines)


def _keeper_lines(facts: dict) -> list[str]:
    """Who keeps the working copy now, or that its deploy was interrupted."""
    holder = facts.get("kept_by")
    lines = []
    if holder and holder.get("command") == DAEMON_COMMAND:
        lines.append(f"kept by       a running spaceport daemon (spaceport run, pid "
                     f"{holder.get('pid', '?')} on {holder.get('host', '?')}, since "
                     f"{holder.get('since', '?')}): it saves this copy; its page and "
                     "POST /save are the way to act on it")
    elif holder:
        lines.append(f"busy          'spaceport {holder.get('command', '?')}' (pid "
                     f"{holder.get('pid', '?')} on {holder.get('host', '?')}) is working on it "
                     "now")
    if facts.get("deploy_interrupted"):
        lines.append(f"              INTERRUPTED: the deploy stopped before it finished; "
                     f"run it again to finish (it copies only what is missing): spaceport "
                     f"deploy {facts['primary']} {facts['work']}")
    return lines


def _unsaved_lines(pending: dict, interrupted: bool) -> list[str]:
    """What a save would do now, and when the files it would upload last changed."""
    changed = pending["files_to_upload"] or pending["entries_to_delete"] or \
        pending["links_changed"] or pending["new_dirs"] or pending.get("moves")
    if interrupted:
        return [f"unsaved       {unsaved_summary(pending) if changed else 'nothing of yours'}"
                "; the working copy is INCOMPLETE: the interrupted deploy has not copied "
                "everything yet"]
    if not changed:
        return ["unsaved       nothing: the primary is up to date"]
    lines = [f"unsaved       {unsaved_summary(pending)}"]
    now_ns = datetime.now(timezone.utc).timestamp() * 1e9
    for item in pending.get("recent") or ():
        ago = duration(max(0.0, (now_ns - item["mtime_ns"]) / 1e9))
        lines.append(f"                {show_path(item['path'])}  {human_size(item['size'])}, "
                     f"changed {ago} ago ({iso_time(item['mtime_ns'] / 1e9)})")
    more = pending["files_to_upload"] - len(pending.get("recent") or ())
    if more > 0:
        lines.append(f"                ... and {count(more, 'more file')}")
    return lines


def journal_lines(saves: list[dict]) -> list[str]:
    """The recent saves; held deletions as the latest record says: a record of held
    deletions that a later save settled (or held anew) is history, not the state."""
    lines = []
    for i, save in enumerate(saves):
        lines.append(f"saved         {save.get('time')}  "
                     f"{count(save.get('uploaded') or 0, 'file')} uploaded, "
                     f"{human_size(save.get('bytes') or 0)}, {save.get('deleted') or 0} "
                     f"deleted ({save.get('instance') or save.get('host') or 'unknown'})")
        held, settled = save.get("held_deletions"), save.get("held_deletions_settled")
        if held and held_record(saves[i + 1:]) is not None:
            lines.append(f"              {count(held.get('count') or 0, 'deletion')} held "
                         "then; a later save settled them or held others (below)")
        elif held:
            lines.append(f"              {count(held.get('count') or 0, 'deletion')} held "
                         f"(still on the primary): {held.get('reason')}")
            lines += [f"                {show_path(p)}" for p in held.get("sample") or ()]
        if settled:
            before = count(settled.get("count") or 0, "deletion")
            lines.append(f"              none held any more ({before} held before: carried "
                         "out, or the files came back)")
    return lines


def held_record(saves: list[dict]) -> dict | None:
    """The newest journal record that says what is held: ``{"held": summary}`` or
    ``{"held": None}`` once settled; None if no save says."""
    for save in reversed(saves):
        if save.get("held_deletions_settled") and not save.get("held_deletions"):
            return {"held": None}
        if save.get("held_deletions"):
            return {"held": save["held_deletions"]}
    return None


def held_lines(facts: dict) -> list[str]:
    """The deletions the deletion guard holds, and the special files not saved."""
    lines = []
    held = facts.get("held_deletions")
    if held:
        links = f", {count(held['links'], 'link')}" if held.get("links") else ""
        lines.append(f"held          {count(held['count'], 'deletion')} "
                     f"({count(held['files'], 'file')}{links}) since "
                     f"{held.get('since') or '?'}: the "
                     f"working copy looks wrong: {held['reason']}")
        lines += [f"                {show_path(p)}" for p in held["sample"][:10]]
        if held["count"] > min(len(held["sample"]), 10):
            more = held["count"] - min(len(held["sample"]), 10)
            lines.append(f"                ... and {more} more")
        kept = "stay on the primary (the links in the manifest)" if links else "stay on the primary"
        lines.append(f"              they {kept}; to carry them out: spaceport "
                     f"save --allow-mass-delete {facts['work']} (or POST /confirm-deletions "
                     "to its daemon)")
    special = facts.get("special") or []
    if special:
        lines.append(f"special       {count(len(special), 'special file')} (fifo, socket, "
                     "device) cannot be saved and are skipped:")
        lines += [f"                {show_path(p)}" for p in special[:20]]
    return lines


def _legacy_lines(facts: dict) -> list[str]:
    lines = []
    old = facts.get("old_system")
    if old:
        lines.append(f"old system    {old['system']} used this space last ({old['file']}, "
                     f"written {old['written']})")
    if facts.get("legacy_import"):
        lines += [("import        " if i == 0 else "              ") + text
                  for i, text in enumerate(facts["legacy_import"]["plan"])]
    elif facts.get("legacy_import_error"):
        lines.append(f"import        REFUSED: {facts['legacy_import_error']}")
    elif facts["legacy_link_lists"]:
        lines.append(f"legacy lists  {', '.join(facts['legacy_link_lists'])} (kept, not read: "
                     "links.jsonl is used)")
    imported = facts.get("imported_from")
    if imported:
        lines.append(f"imported      {count(imported.get('links') or 0, 'link')} from "
                     f"{imported.get('file')} "
                     f"({imported.get('system')}) on {imported.get('imported')}")
    lines += [f"not restored  {text}" for text in facts.get("not_restored") or ()]
    return lines


def _target(target: str | None) -> str:
    return "no link" if target is None else f"-> {quote(target)}"


@dataclass
class VerifyReport:
    checked_files: int = 0
    checked_links: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


def verify(work_path: str, opts: Options, *, checksum: bool = False) -> VerifyReport:
    """Compare the working copy with the primary, file by file, and the links."""
    work_path = os.path.abspath(work_path)
    marker = require_working_copy(work_path)
    opts = dataclasses.replace(opts, status_dir=marker.status_dir)  # the copy knows its own
    report = VerifyReport()
    with open_primary(marker.primary, marker.token, opts) as primary, \
            open_work(work_path, marker.token) as work, ExitStack() as stack:
        # What the working copy excludes is compared on neither side: it is not saved.
        exclude = compile_excludes(marker.exclude)
        pscan = scan_tree(primary, skip_top={marker.status_dir, MARKER_DIR} | TOP_LEVEL_NAMES,
                          jobs=opts.jobs, exclude=exclude)
        wscan = scan_tree(work, skip_top={MARKER_DIR}, temp_token=marker.token,
                          exclude=exclude)
        live = fold_companions(wscan, work)  # a -wal or -journal is part of its database
        diff = report.differences
        snapshots = stack.enter_context(scratch_snapshots(marker_dir(work_path))) \
            if checksum or live else None
        for path, w in sorted(wscan.entries.items()):
            p = pscan.entries.get(path)
            if w.kind is Kind.LINK:
                continue
            if p is None:
                diff.append(f"only in work: {show_path(path)}")
            elif p.kind is not w.kind:
                diff.append(f"different kind: {show_path(path)}")
            elif w.kind is Kind.FILE:
                report.checked_files += 1
                # A database with its -wal or -journal is saved as a snapshot: that is what
                # the primary's file is compared with (engine.content).
                size = snapshot_size(work, path, snapshots) if path in live else w.size
                if p.size != size:
                    diff.append(f"size differs: {show_path(path)} (work {count(size, 'byte')}, "
                                f"primary {count(p.size, 'byte')})")
                elif checksum and not same_content(work, primary, path, snapshots):
                    diff.append(f"content differs: {show_path(path)}")
        for path in sorted(set(pscan.entries) - set(wscan.entries)):
            if pscan.entries[path].kind is not Kind.LINK:  # links: compared below
                diff.append(f"only on primary: {show_path(path)}")
        # The manifest, the old list, or (neither yet) the links of a plain primary folder.
        links = with_primary_links(links_to_restore(primary, opts), pscan, primary.root).links
        listed = {link.path: link for link in links}
        wanted = {p: resolve_target(link, work_path, opts.rebase) for p, link in listed.items()}
        have = {e.path: e.target for e in wscan.entries.values() if e.kind is Kind.LINK}
        report.checked_links = len(have)
        rebased = rebased_links(work_path, listed, have)
        for path in sorted(set(wanted) | set(have)):
            if wanted.get(path) == have.get(path):
                continue
            what = ("link rebased by the deploy, not saved yet (the next save records it)"
                    if path in rebased else "link differs")
            diff.append(f"{what}: {show_path(path)} (work: {_target(have.get(path))}, "
                        f"manifest: {_target(wanted.get(path))})")
    return report


def rebased_links(work_path: str, listed: dict, have: dict[str, str | None]) -> set[str]:
    """The links whose target ``deploy --rebase OLD=NEW`` rewrote and no save recorded yet:
    an unsaved change, as status counts it ("links changed"), not a corruption. A deploy
    records every link it restored as the manifest says in the state index; a rebased one
    it leaves out, so that the first save writes its new target into the manifest
    (commands.deploy.stagein.links). So: an absolute target outside the project in the
    manifest, another absolute target in the working copy, and no row for it in an index
    that exists (an index that is gone proves nothing either way: "link differs")."""
    candidates = [path for path, target in have.items()
                  if path in listed and target and target.startswith("/")
                  and not listed[path].anchored and listed[path].target.startswith("/")
                  and listed[path].target != target]
    if not candidates or not os.path.exists(index_path(work_path)):
        return set()
    index = look_at_index(work_path)
    try:
        return {path for path in candidates if index.get(path) is None}
    finally:
        index.close()
