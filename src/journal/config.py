"""JournalConfig: every limit of the journal, from keywords or JOURNAL_* variables.

The defaults live in the field declarations below and nowhere else.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Optional, Union

from journal._buffer_shared import MAX_CAPACITY
from journal._highlights import (
    DEFAULT_LINE_LIMIT,
    DEFAULT_PATTERNS,
    MAX_BUDGET,
    HighlightRule,
    HighlightRules,
)

#: A highlight pattern: a plain text, or a rule (``journal._highlight_rules.HighlightRule``).
Pattern = Union[str, HighlightRule]
from journal.errors import ConfigError

__all__ = ["MAX_SECONDS", "MAX_SHARDS", "JournalConfig"]

ENV_PREFIX = "JOURNAL_"

#: The longest duration any setting (or a deadline) may have: ten years.
#: Every ``now + seconds`` stays an exact finite float, and every wait on it
#: is far below ``threading.TIMEOUT_MAX`` (where ``Event.wait`` overflows).
MAX_SECONDS = 10 * 365 * 86400
#: More registry shards than this buy nothing but memory.
MAX_SHARDS = 1 << 16


class _DerivedRules:
    """What ``JournalConfig.__post_init__`` derives from the highlight fields
    (set with ``object.__setattr__``, the dataclass being frozen).  Declared
    on a plain base class so that they are typed but are not dataclass fields:
    they take no part in ``__init__``, ``__eq__``, ``repr`` or ``replace``."""

    _default_rules: Optional[HighlightRules]
    _stream_rules: Mapping[str, Optional[HighlightRules]]


@dataclasses.dataclass(frozen=True)
class JournalConfig(_DerivedRules):
    """Limits and timings of a TaskJournal; validated at construction.

    Sizes are bytes, durations are seconds (floats).  Build one from keywords,
    or with :meth:`from_env` from ``JOURNAL_<FIELD>`` environment variables
    (``JOURNAL_HEAD_BYTES=8192``), keywords taking precedence.
    """

    #: Bytes kept from the start of every stream.
    head_bytes: int = 20_000
    #: Bytes kept from the end of every stream.
    tail_bytes: int = 20_000
    #: Per-stream ``(head, tail)`` overrides, e.g. ``{"thoughts": (4096, 4096)}``.
    #: From the environment: ``thoughts=4096:4096,stderr=8192:8192``.
    stream_limits: Mapping[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    #: How long a finished task's result and streams are kept.
    result_ttl: float = 24 * 3600.0
    #: A node that neither heartbeats nor streams for this long loses its tasks.
    lease_timeout: float = 60.0
    #: After a hub restart, how long an in-flight task waits for its node to
    #: re-attach before it is LOST.
    reattach_grace: float = 120.0
    #: Registry shards (a power of two); more shards, less lock contention.
    shards: int = 16
    #: Where the journal is kept: ``memory://`` (nothing survives a restart).
    store_url: str = "memory://"
    #: Bytes of stream buffers to keep resident; None for no bound.  On a
    #: durable store, running tasks' buffers past it are spilled to the
    #: store; on memory://, finished tasks' output past it is released.
    memory_budget: Optional[int] = 256 * 1024 * 1024  # 256 MiB
    #: How often changed stream buffers are written to the store.
    checkpoint_interval: float = 1.0
    #: How often deadlines, leases and retention are enforced in the
    #: background; 0 disables the timer (call ``TaskJournal.sweep()`` yourself).
    sweep_interval: float = 1.0
    #: Lines of the dropped middle kept when they match one of these rules
    #: (the default table knows the common toolchains; plain texts match
    #: lines containing them, ASCII case-insensitively).  From the
    #: environment, plain texts: ``error,fatal``.
    highlight_patterns: tuple[Pattern, ...] = DEFAULT_PATTERNS
    #: Bytes of highlight lines kept per stream; 0 turns highlights off.
    highlight_budget: int = 4096
    #: Bytes kept of any one highlight line (at most half the budget).
    highlight_line_limit: int = DEFAULT_LINE_LIMIT
    #: Per-stream patterns overriding ``highlight_patterns``; an empty list
    #: turns highlights off for that stream.  From the environment:
    #: ``stderr=error|warning,stdin=``.
    stream_highlights: Mapping[str, tuple[Pattern, ...]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("head_bytes", "tail_bytes"):
            _check_int(name, getattr(self, name), minimum=0, maximum=MAX_CAPACITY)
        _check_int("shards", self.shards, minimum=1, maximum=MAX_SHARDS)
        if self.shards & (self.shards - 1):
            raise _error("shards", f"must be a power of two, got {self.shards}")
        if self.memory_budget is not None:
            _check_int("memory_budget", self.memory_budget, minimum=0, maximum=sys.maxsize)
        for name in ("result_ttl", "lease_timeout", "reattach_grace", "checkpoint_interval"):
            _check_seconds(name, getattr(self, name), allow_zero=False)
        _check_seconds("sweep_interval", self.sweep_interval, allow_zero=True)
        if not isinstance(self.store_url, str) or "://" not in self.store_url:
            raise _error("store_url", f"must be a URL like 'memory://', got {self.store_url!r}")
        object.__setattr__(self, "stream_limits", _frozen_limits(self.stream_limits))
        _check_int("highlight_budget", self.highlight_budget, minimum=0, maximum=MAX_BUDGET)
        _check_int("highlight_line_limit", self.highlight_line_limit, minimum=1,
                   maximum=MAX_BUDGET // 2)
        if 0 < self.highlight_budget < 2 * self.highlight_line_limit:
            raise _error(
                "highlight_budget",
                f"must be 0 (off) or at least twice highlight_line_limit "
                f"({self.highlight_line_limit}), got {self.highlight_budget}",
            )
        patterns = _pattern_tuple("highlight_patterns", self.highlight_patterns)
        object.__setattr__(self, "highlight_patterns", patterns)
        overrides = _frozen_highlights(self.stream_highlights)
        object.__setattr__(self, "stream_highlights", overrides)
        # Made once: every stream of every task shares these.
        object.__setattr__(self, "_default_rules", self._rules("highlight_patterns", patterns))
        object.__setattr__(self, "_stream_rules", {
            stream: self._rules(f"stream_highlights[{stream!r}]", items)
            for stream, items in overrides.items()
        })

    def limits_for(self, stream: str) -> tuple[int, int]:
        """The ``(head, tail)`` capacities of a stream with this name."""
        return self.stream_limits.get(stream, (self.head_bytes, self.tail_bytes))

    def highlights_for(self, stream: str) -> Optional[HighlightRules]:
        """The highlight rules of a stream with this name, or None when off."""
        return self._stream_rules.get(stream, self._default_rules)

    def _rules(self, field: str, patterns: tuple[Pattern, ...]) -> Optional[HighlightRules]:
        if self.highlight_budget == 0 or not patterns:
            return None
        try:
            return HighlightRules(patterns, self.highlight_budget, self.highlight_line_limit)
        except ValueError as exc:
            detail = f"{field}: {exc}" if "[" in field else str(exc)
            raise _error(field.split("[")[0], detail) from None

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> JournalConfig:
        """Read ``JOURNAL_<FIELD>`` variables; keyword ``overrides`` win."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is None or field.name in overrides:
                continue
            values[field.name] = _parse_env(field.name, raw.strip())
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> JournalConfig:
        return dataclasses.replace(self, **changes)


def _error(name: str, problem: str) -> ConfigError:
    variable = ENV_PREFIX + name.split("[")[0].upper()  # stream_limits['x']: one variable
    return ConfigError(f"JournalConfig.{name} ({variable}) {problem}")


def _check_int(name: str, value: object, minimum: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _error(name, f"must be an int, got {_short(value)}")
    if value < minimum:
        raise _error(name, f"must be >= {minimum}, got {_short(value)}")
    if value > maximum:
        raise _error(name, f"must be <= {maximum}, got {_short(value)}")


def _seconds_limit() -> tuple[float, str]:
    # threading.TIMEOUT_MAX is lower than ten years on some platforms
    # (about 49 days on Windows): every interval must be a wait that works.
    if threading.TIMEOUT_MAX < MAX_SECONDS:
        return threading.TIMEOUT_MAX, f"threading.TIMEOUT_MAX ({threading.TIMEOUT_MAX:,.0f})"
    return MAX_SECONDS, f"10 years ({MAX_SECONDS:,})"


def _check_seconds(name: str, value: object, allow_zero: bool) -> None:
    limit, limit_text = _seconds_limit()
    lowest = "0 (off) or more" if allow_zero else "> 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _error(name, f"must be a number of seconds, got {_short(value)}")
    # Compared, never converted: math.isfinite(10**400) raises OverflowError,
    # and nan fails every comparison.
    if not ((0 <= value if allow_zero else 0 < value) and value <= limit):
        raise _error(
            name,
            f"must be a finite number of seconds {lowest} and at most {limit_text}, "
            f"got {_short(value)}",
        )


def _short(value: object, limit: int = 64) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _frozen_limits(limits: object) -> Mapping[str, tuple[int, int]]:
    if not isinstance(limits, Mapping):
        raise _error("stream_limits", f"must map stream names to (head, tail), got {limits!r}")
    frozen = {}
    for stream, pair in limits.items():
        _check_stream_name("stream_limits", stream)
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise _error("stream_limits", f"[{stream!r}] must be (head, tail), got {pair!r}")
        for value in pair:
            _check_int(f"stream_limits[{stream!r}]", value, minimum=0, maximum=MAX_CAPACITY)
        frozen[stream] = (pair[0], pair[1])
    return MappingProxyType(frozen)


def _pattern_tuple(name: str, patterns: object) -> tuple[Pattern, ...]:
    if isinstance(patterns, str) or not isinstance(patterns, (tuple, list)):
        raise _error(name, f"must be a list of patterns, got {patterns!r}")
    for item in patterns:
        if isinstance(item, HighlightRule):
            continue  # HighlightRules checks it
        if not isinstance(item, str) or not item:
            raise _error(name, f"has a bad pattern {item!r}")
    return patterns if isinstance(patterns, tuple) else tuple(patterns)  # a RuleTable stays one


def _frozen_highlights(overrides: object) -> Mapping[str, tuple[Pattern, ...]]:
    if not isinstance(overrides, Mapping):
        raise _error("stream_highlights", f"must map stream names to patterns, got {overrides!r}")
    frozen = {}
    for stream, patterns in overrides.items():
        _check_stream_name("stream_highlights", stream)
        frozen[stream] = _pattern_tuple(f"stream_highlights[{stream!r}]", patterns)
    return MappingProxyType(frozen)


def _check_stream_name(field: str, stream: object) -> None:
    if not isinstance(stream, str) or not stream:
        raise _error(field, f"has a bad stream name {stream!r}")
    try:
        stream.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _error(
            field, f"has a stream name {stream!r} that is not valid UTF-8 (a lone surrogate at "
            f"position {exc.start}); no stream can have that name"
        ) from None


def _parse_env(name: str, raw: str) -> Any:
    try:
        if name == "store_url":
            return raw
        if name == "memory_budget":
            return None if raw.lower() in ("", "none") else int(raw)
        if name in ("head_bytes", "tail_bytes", "shards", "highlight_budget",
                    "highlight_line_limit"):
            return int(raw)
        if name == "stream_limits":
            return _parse_limits(raw)
        if name == "highlight_patterns":
            return tuple(_split(raw, ","))
        if name == "stream_highlights":
            return {
                stream.strip(): tuple(_split(patterns, "|"))
                for stream, _, patterns in (item.partition("=") for item in _split(raw, ","))
            }
        return float(raw)
    except ValueError:
        raise _error(name, f"cannot parse {raw!r}") from None


def _parse_limits(raw: str) -> dict[str, tuple[int, int]]:
    limits = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        stream, _, sizes = item.partition("=")
        head, _, tail = sizes.partition(":")
        limits[stream.strip()] = (int(head), int(tail))
    return limits


def _split(raw: str, separator: str) -> list[str]:
    return [part.strip() for part in raw.split(separator) if part.strip()]
