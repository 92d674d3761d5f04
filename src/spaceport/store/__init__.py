"""Storage backends: the abstract core (:mod:`.base`) and the POSIX folder backend."""

from .base import (
    Capabilities,
    DirItem,
    Store,
    is_our_temp,
    is_retryable,
    join,
    parent_of,
)
from .posix import PRIMARY_CAPABILITIES, WORK_CAPABILITIES, PosixStore

__all__ = [
    "Capabilities", "DirItem", "Store", "PosixStore", "PRIMARY_CAPABILITIES",
    "WORK_CAPABILITIES", "is_our_temp", "is_retryable", "join", "parent_of",
]
