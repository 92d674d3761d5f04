"""Deploy: lock the primary, copy it onto the working copy, re-create the links.

:mod:`.flow` is the deploy itself; before it copies anything it checks the arguments and
the primary (:mod:`.preflight`), what the working copy already holds (:mod:`.local_work`,
and :mod:`.discard` for ``--discard-local``) and where the links come from
(:mod:`.linksource`); :mod:`.stagein` copies under the lock. :mod:`.preview` is
``--dry-run``; :mod:`.report` what a deploy says it did.
"""

from .flow import deploy, read_marker_quietly
from .preview import preview_deploy
from .report import DeployReport

__all__ = ["deploy", "preview_deploy", "read_marker_quietly", "DeployReport"]
