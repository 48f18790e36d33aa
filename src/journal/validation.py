"""Checks on what callers hand the journal, made before anything changes."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Optional, Union

from journal.errors import InvalidArgument

__all__ = ["MAX_ID_LENGTH", "check_id", "encode_json", "encode_result"]

#: Longest task id, node id or stream name accepted, in characters.
MAX_ID_LENGTH = 256

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# One encoder, made once: json.dumps() with options builds a new one per call.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def check_id(kind: str, value: object) -> str:
    """Return ``value`` if it is a usable id, else raise InvalidArgument."""
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
    return value


def encode_json(what: str, task_id: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(
            f"task {task_id!r}: {what} must be JSON-serialisable ({exc}); "
            "convert it to dicts, lists, strings and numbers, or pass bytes"
        ) from None


def encode_result(task_id: str, result: Any) -> Union[bytes, str, None]:
    """The stored form of a result: raw bytes, or JSON text."""
    if isinstance(result, (bytes, bytearray, memoryview)):
        return bytes(result)
    return encode_json("the result", task_id, result)


def decode_result(stored: Union[bytes, str, None]) -> Any:
    if stored is None or isinstance(stored, bytes):
        return stored
    return json.loads(stored)


def check_deadline(task_id: str, deadline: object) -> Optional[float]:
    if deadline is None:
        return None
    if (
        isinstance(deadline, bool)
        or not isinstance(deadline, (int, float))
        or not math.isfinite(deadline)
        or deadline <= 0
    ):
        raise InvalidArgument(
            f"task {task_id!r}: deadline is seconds from now, a number > 0, got {deadline!r}"
        )
    return float(deadline)


def check_timeout(task_id: str, timeout: object) -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or math.isnan(timeout):
        raise InvalidArgument(f"task {task_id!r}: timeout must be seconds or None, got {timeout!r}")
    return max(0.0, float(timeout))
