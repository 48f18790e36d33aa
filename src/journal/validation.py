"""Checks on what callers hand the journal, made before anything changes."""

from __future__ import annotations

import json
import re
import sys
import threading
from typing import Any, Optional, Union, cast

from journal.config import MAX_SECONDS
from journal.errors import InvalidArgument, StoreCorrupt
from journal.lifecycle import TaskStatus

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_SECONDS",
    "check_deadline",
    "check_interval",
    "check_id",
    "check_limit",
    "check_status",
    "check_timeout",
    "encode_json",
    "encode_result",
]

#: Longest task id, node id or stream name accepted, in characters.
MAX_ID_LENGTH = 256

_STATUS_VALUES = ", ".join(status.value for status in TaskStatus)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# One encoder, made once: json.dumps() with options builds a new one per call.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def check_id(kind: str, value: object) -> str:
    """Return ``value`` if it is a usable id, else raise InvalidArgument."""
    # Printable ASCII (nearly every id) has no control character and is
    # UTF-8: only its length is left to check.
    # Exactly str: a subclass may answer isprintable() as it likes.
    if type(value) is str and value.isascii() and value.isprintable() \
            and 0 < len(value) <= MAX_ID_LENGTH:
        return value
    if not isinstance(value, str):
        raise InvalidArgument(f"{kind} must be a str, got {type(value).__name__}")
    if not value:
        raise InvalidArgument(f"{kind} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(
            f"{kind} is {len(value)} characters long; the limit is {MAX_ID_LENGTH} "
            f"(starts {value[:32]!r})"
        )
    bad = _CONTROL.search(value)
    if bad:
        raise InvalidArgument(
            f"{kind} {value[:64]!r} contains the control character "
            f"{bad.group()!r} at position {bad.start()}; ids are printable text"
        )
    if not value.isascii():  # ASCII ids, nearly all of them, skip the encode
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidArgument(
                f"{kind} {value[:64]!r} contains the lone surrogate {value[exc.start]!r} "
                f"at position {exc.start}, which is not valid UTF-8 and no store can hold; "
                "ids are text: decode bytes with errors='replace', not 'surrogateescape'"
            ) from None
    return value


def encode_json(what: str, task_id: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    try:
        # The encoder's own entry point, frames and all: calling its compiled
        # core directly let metas two levels deeper in, which json.loads
        # (what get() decodes with) then could not read back.
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(
            f"task {task_id!r}: {what} must be JSON-serialisable ({exc}); "
            "convert it to dicts, lists, strings and numbers, or pass bytes"
        ) from None
    except RecursionError:
        raise InvalidArgument(
            f"task {task_id!r}: {what} is nested too deep to encode as JSON; "
            "flatten it, or pass it as bytes"
        ) from None


def encode_result(task_id: str, result: Any) -> Union[bytes, str, None]:
    """The stored form of a result: raw bytes, or JSON text."""
    if isinstance(result, (bytes, bytearray, memoryview)):
        return bytes(result)
    return encode_json("the result", task_id, result)


def read_back_json(what: str, task_id: str, text: str) -> Any:
    """What a later read will decode from ``text``, which ``encode_json``
    has just made: decoded as ``get()`` decodes it (``json.loads``) before
    the change is committed, so that a value nested too deep to read back is
    refused with InvalidArgument and nothing written, instead of stored for
    every read to fail on (the encoder's and the decoder's limits differ)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise InvalidArgument(
            f"task {task_id!r}: {what} is nested too deep to be read back from JSON; "
            "flatten it, or pass it as bytes"
        ) from None


def decode_result(stored: Union[bytes, str, None]) -> Any:
    """A result or meta as the journal stored it; StoreCorrupt if what the
    store gave back is not JSON the journal could have written."""
    if stored is None or isinstance(stored, bytes):
        return stored
    try:
        return json.loads(stored)
    except (TypeError, ValueError, RecursionError):
        raise StoreCorrupt(
            f"a stored result or meta is not JSON the journal wrote (starts {_short(stored)}); "
            "run `taskjournal check --repair` on the store"
        ) from None


def check_deadline(task_id: str, deadline: object) -> Optional[float]:
    """Seconds from now, as a float, or None; at most :data:`MAX_SECONDS`."""
    if deadline is None:
        return None
    # Compared, never converted first: float(10**400) and math.isfinite of
    # it raise OverflowError, and nan fails every comparison.
    if (
        isinstance(deadline, bool)
        or not isinstance(deadline, (int, float))
        or not 0 < deadline <= MAX_SECONDS
    ):
        raise InvalidArgument(
            f"task {task_id!r}: deadline is seconds from now, a number > 0 and at most "
            f"10 years ({MAX_SECONDS:,}), got {_short(deadline)}"
        )
    return float(deadline)


def check_timeout(task_id: str, timeout: object) -> Optional[float]:
    """Seconds to wait for, or None to wait without a limit.

    None, +inf and anything from ``threading.TIMEOUT_MAX`` up (which
    ``Event.wait`` refuses with OverflowError) give None; zero and negative
    values give 0.0 (do not wait); nan and non-numbers raise InvalidArgument.
    """
    if timeout is None:
        return None
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or timeout != timeout  # nan; math.isnan(10**400) would overflow
    ):
        raise InvalidArgument(
            f"task {task_id!r}: timeout must be seconds or None, got {_short(timeout)}"
        )
    if timeout >= threading.TIMEOUT_MAX:
        return None
    if timeout <= 0:
        return 0.0
    return float(timeout)


def check_interval(task_id: str, name: str, value: object, low: float = 0.001, high: float = 3600.0) -> float:
    """A polling interval: finite seconds from ``low`` to ``high``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (low <= value <= high)  # also refuses nan, inf and 10**400
    ):
        raise InvalidArgument(
            f"task {task_id!r}: {name} must be seconds from {low:g} to {high:g}, got {_short(value)}"
        )
    return float(value)


def check_status(value: object) -> Optional[TaskStatus]:
    """A status filter: None, a TaskStatus, or its value (``"running"``)."""
    if value is None or isinstance(value, TaskStatus):
        return value
    if isinstance(value, str):
        # The map holds TaskStatus members; typeshed types its values as Enum.
        status = cast(Optional[TaskStatus], TaskStatus._value2member_map_.get(value))
        if status is not None:
            return status
    raise InvalidArgument(
        f"unknown task status {_short(value)}: give None, a TaskStatus or one of {_STATUS_VALUES}"
    )


def check_limit(value: object) -> Optional[int]:
    """A count limit: None (no limit) or an int >= 0.

    A limit beyond any store's size (above ``sys.maxsize``) is the same as
    no limit and gives None, so no store has to bind a huge integer.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(
            f"limit must be None or a whole number >= 0, got {_short(value)}"
        )
    return None if value > sys.maxsize else int(value)


def _short(value: object, limit: int = 64) -> str:
    """``repr(value)``, cut short: a 400-digit number must not flood a message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
