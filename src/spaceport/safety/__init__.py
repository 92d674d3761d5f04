"""The safety mechanisms: the deployment lock on the primary and its fence, one command at
a time per working copy (worklock), nothing in a working copy removed unless proven saved
(invariant), and deletions held when a working copy looks wrong (deletion guard)."""
