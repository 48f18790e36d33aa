"""Checks on what callers hand the journal, made before anything changes."""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Callable
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


def _compiled_encoder() -> Optional[Callable[..., Any]]:
    """What ``_ENCODER.encode`` calls, to call it without its two Python
    frames: the compiled encoder maker, which ``encode_json`` calls as
    ``JSONEncoder.iterencode`` does (fresh markers for the check of circular
    references each time).  Used only if it agrees with ``_ENCODER`` on a
    probe; None where there is none (then ``_ENCODER.encode`` is called)."""
    make: Optional[Callable[..., Any]] = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    probe = {"a": [1, 2.5, "\u00e9\n", None, True], "b": {"c": -1e300}, "d": "x"}
    try:
        for value in (probe, "s", 1):
            chunks = make({}, *_ENCODER_ARGS)(value, 0)
            if "".join(chunks) != _ENCODER.encode(value):
                return None
    except Exception:  # noqa: BLE001 - another Python's encoder: use the plain one
        return None
    return make


#: ``_ENCODER``'s settings, in the order the compiled encoder takes them.
_ENCODER_ARGS = (_ENCODER.default, json.encoder.encode_basestring_ascii, None, ":", ",",
                 False, False, False)
_MAKE_ENCODER = _compiled_encoder()
#: ``json.loads`` less its checks around the scan, for JSON this module has
#: just encoded (no whitespace, no BOM, valid by construction).
_DECODER: Any = json.decoder.JSONDecoder()  # typeshed leaves out its scan_once
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once


def check_id(kind: str, value: object) -> str:
    """Return ``value`` if it is a usable id, else raise InvalidArgument."""
    # Printable ASCII (nearly every id) has no control character and is
    # UTF-8: only its length is left to check.
    if isinstance(value, str) and value.isascii() and value.isprintable() \
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
        if _MAKE_ENCODER is not None:
            return "".join(_MAKE_ENCODER({}, *_ENCODER_ARGS)(value, 0))
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


def decode_own_json(text: str) -> Any:
    """What ``json.loads`` gives for ``text``, which ``encode_json`` has just
    made (in this process, not read back from a store)."""
    return _SCAN(text, 0)[0]


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
