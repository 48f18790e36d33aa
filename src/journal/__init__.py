"""taskjournal: the task journal an agent-mesh hub embeds.

See the README for the guarantees; ``journal.buffer.IMPLEMENTATION`` tells
whether the compiled head+tail buffer is in use.
"""

from journal.buffer import IMPLEMENTATION, HeadTailBuffer
from journal.errors import CorruptSnapshot, JournalError, StreamSealed

__all__ = [
    "IMPLEMENTATION",
    "CorruptSnapshot",
    "HeadTailBuffer",
    "JournalError",
    "StreamSealed",
]

__version__ = "0.1.0"
