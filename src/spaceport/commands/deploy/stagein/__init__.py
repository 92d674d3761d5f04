"""The stage-in of a deploy: the primary copied onto the working copy, under the lock.

Resumable and never destructive. The index records each file after its rename, so a rerun
copies only what is missing; a copy a killed run could not record is recognised by its
content (:func:`~spaceport.safety.invariant.prove_by_content`), never taken for the user's edit.
Nothing in the working copy is replaced or removed unless the index proves it saved
(:mod:`spaceport.safety.invariant`): a proven version the primary no longer holds (changed or
deleted there while this copy was away) is first kept in the primary's trash; anything
else in the way is the user's and stays where it is.

Before copying, the free space and inodes of the working volume are compared with what the
stage-in needs; if the volume still fills up, the copy stops at the first ENOSPC with one
summary line, and the rerun continues.

:mod:`.flow` is the sequence; its steps are :mod:`.keep_versions`, :mod:`.downloads`,
:mod:`.links` and :mod:`.folders`, sharing one :class:`~.run.StageRun`.
"""

from .flow import check_room, open_stage_index, stage_in

__all__ = ["stage_in", "open_stage_index", "check_room"]
