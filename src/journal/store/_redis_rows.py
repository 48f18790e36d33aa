"""A task row as Redis hash fields, and back."""

from __future__ import annotations

from typing import Any, Optional

from journal.store.base import TaskRow

__all__ = ["pack_row", "unpack_row"]


def pack_row(row: TaskRow) -> bytes:
    """The row's fields (and whether its result is text or bytes) as one
    script argument: ``<length>:<bytes>`` each, ``-1:`` for None (few
    arguments keep a registration cheap to send: redis-py spends most of a
    call's time packing them)."""
    kind = None if row.result is None else ("b" if isinstance(row.result, bytes) else "s")
    parts = []
    for value in (*row, kind):
        if value is None:
            parts.append(b"-1:")
            continue
        if isinstance(value, float):
            value = repr(value)
        data = value if isinstance(value, bytes) else value.encode()
        parts.append(b"%d:%s" % (len(data), data))
    return b"".join(parts)


def unpack_row(fields: dict[bytes, bytes]) -> TaskRow:
    def text(name: str) -> Optional[str]:
        raw = fields.get(name.encode())
        return None if raw is None else raw.decode()

    def number(name: str) -> Optional[float]:
        raw = fields.get(name.encode())
        return None if raw is None else float(raw)

    result: Any = fields.get(b"result")
    if result is not None and fields.get(b"result_kind") != b"b":
        result = result.decode()
    return TaskRow(
        text("task_id") or "", text("node_id") or "", text("status") or "", text("meta_json"),
        result, text("error"), number("created_at") or 0.0, number("updated_at") or 0.0,
        number("finished_at"), number("deadline"),
    )
