"""Test and benchmark helpers: a OneData-like FUSE filesystem (:mod:`.onedatafs`)."""
