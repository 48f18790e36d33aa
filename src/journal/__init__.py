"""taskjournal: the task journal an agent-mesh hub embeds.

See the README for the guarantees; ``journal.buffer.IMPLEMENTATION`` tells
whether the compiled head+tail buffer is in use.
"""

from journal.buffer import IMPLEMENTATION, HeadTailBuffer
from journal._highlight_rules import HighlightRule
from journal._highlights import Highlight, HighlightRules
from journal.config import JournalConfig
from journal.errors import (
    ConfigError,
    CorruptSnapshot,
    DuplicateTask,
    InvalidArgument,
    InvalidTransition,
    JournalClosed,
    JournalError,
    OwnedElsewhere,
    ResultExpired,
    StoreCorrupt,
    StoreError,
    StoreLocked,
    StoreUnavailable,
    StreamSealed,
    StreamSpilled,
    TaskLost,
    UnknownTask,
    WaitTimeout,
)
from journal.inspect import JournalInspector
from journal.journal import TaskJournal
from journal.lifecycle import TaskStatus
from journal.records import FollowChunk, StreamView, TaskRecord

__all__ = [
    "IMPLEMENTATION",
    "ConfigError",
    "CorruptSnapshot",
    "DuplicateTask",
    "FollowChunk",
    "HeadTailBuffer",
    "Highlight",
    "HighlightRule",
    "HighlightRules",
    "InvalidArgument",
    "InvalidTransition",
    "JournalClosed",
    "JournalConfig",
    "JournalError",
    "JournalInspector",
    "OwnedElsewhere",
    "ResultExpired",
    "StoreCorrupt",
    "StoreError",
    "StoreLocked",
    "StoreUnavailable",
    "StreamSealed",
    "StreamSpilled",
    "StreamView",
    "TaskJournal",
    "TaskLost",
    "TaskRecord",
    "TaskStatus",
    "UnknownTask",
    "WaitTimeout",
]

__version__ = "0.1.0"
