"""Per-file failures of a copy, said once: a headline, the names, and what to do."""

from __future__ import annotations

import errno

from ..engine.transfer import KeptChangingError
from ..errors import PartialSaveError
from ..wording import count

KEPT_CHANGING_HINT = ("Their previous versions are kept on the primary, none torn. Save "
                      "again once the application has finished writing them (or stop it).")


def describe_failures(failed: list[tuple[str, BaseException]]) -> tuple[str, str | None]:
    """A headline for per-file failures, and a hint when they share a known cause."""
    codes = {getattr(exc, "errno", None) for _, exc in failed}
    if any(isinstance(exc, KeptChangingError) for _, exc in failed):
        return ("files kept changing while they were copied (an application is writing "
                "them)", KEPT_CHANGING_HINT)
    if codes & {errno.ENOSPC, errno.EDQUOT}:
        return ("the destination storage is full (no space left or quota exceeded)",
                "Make room (or raise the quota), then run the same command again: the files "
                "that were written are kept and only the rest is copied.")
    if codes & {errno.EACCES, errno.EPERM}:
        return ("permission denied", "Check the permissions of the files named above.")
    return ("some files could not be copied", "Run the same command again to retry them.")


def partial_error(verb: str, failed: list[tuple[str, BaseException]], kept: str) -> PartialSaveError:
    headline, hint = describe_failures(failed)
    names = "\n".join(f"  {path}: {exc}" for path, exc in failed[:20])
    more = f"\n  … and {len(failed) - 20} more" if len(failed) > 20 else ""
    return PartialSaveError(
        f"{verb} incomplete: {headline}; {count(len(failed), 'file')} failed:\n{names}"
        f"{more}\n{kept}",
        [(p, str(e)) for p, e in failed], hint=hint,
        kept_changing=[p for p, e in failed if isinstance(e, KeptChangingError)])
