"""What a save did (or, dry run, would do): the counts the command line, the daemon's page
and the journal show."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...engine.plan import SavePlan
from ...errors import RefusedError


@dataclass
class SaveReport:
    plan: dict = field(default_factory=dict)
    dry_run: bool = False
    uploaded: int = 0
    uploaded_bytes: int = 0  # bytes written: an append counts its new bytes only
    appended: int = 0  # of the files uploaded, those saved by writing their new bytes alone
    dirs_created: int = 0
    deleted: int = 0
    trashed: list[str] = field(default_factory=list)  # the first of those moved to the trash
    moved: int = 0  # files and folders renamed on the primary (a folder: one, whatever it holds)
    kept_dirs: list[str] = field(default_factory=list)  # not removed: hold unknown files
    trash_batch: str | None = None
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # (path, primary's kept as)
    # (path, trash batch): primary versions not proven ours, kept in the trash before ours
    kept_unproven: list[tuple[str, str]] = field(default_factory=list)
    manifest_written: bool = False
    cerit_dump_written: bool = False  # symlink-dump, for CERIT's app (save/cerit_dump.py)
    cerit_left_out: list[str] = field(default_factory=list)  # links it cannot hold, and why
    # Links the new manifest lacks, the manifest before kept in the trash batch (-1: it
    # could not be read, kept as it was); 0: nothing was dropped.
    links_dropped: int = 0
    links: int = 0
    deletes_skipped: bool = False
    special: list[str] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)
    snapshots: int = 0  # databases saved as snapshots
    vanished: int = 0  # files removed between the scan and their upload: not errors
    databases_held: list[str] = field(default_factory=list)  # left for the next save
    # Databases saved but not recorded: changed within the last second (snapshot.is_racy)
    racy: list[str] = field(default_factory=list)
    seconds: float = 0.0
    planned: SavePlan | None = None  # a dry run's plan, path by path
    refused: RefusedError | None = None  # a dry run: the real save would stop with this
    held: dict | None = None  # deletions the guard held (deletion_guard.Held.summary)
    held_paths: list[str] = field(default_factory=list)  # all of them
    held_new: bool = False  # not held (or not these) by the save before
    held_settled: int = 0  # deletions the save before held, none held now (done, or back)

    def as_dict(self) -> dict:
        return dict(self.__dict__)
