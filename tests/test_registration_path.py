"""The cheap registration path means what the plain one meant.

A registration takes fewer Python steps than it did: ids that are
printable ASCII skip the checks they cannot fail, the meta is encoded by
the compiled JSON encoder without the two Python frames around it and
decoded back for the record by the scanner alone, a lone caller leads its
own commit without a queue or a lock, and a batch of any size up to a
chunk is one statement (padded with rows of NULLs that insert nothing).
Each test here holds one of those shortcuts to the answer of the long way
round, on real SQLite files.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sys
import threading

import pytest

from journal import InvalidArgument, UnknownTask
from journal.errors import DuplicateTask, StoreError
from journal.store import TaskRow, open_store
from journal.store import sqlite as sqlite_store
from journal.validation import _CONTROL, check_id, encode_json, read_back_json

from test_sqlite_batch import _in_one_batch, _row, _Snap, _statements


# -- ids -----------------------------------------------------------------------


def _long_way(value: str) -> bool:
    """check_id's verdict by its full checks only."""
    return 0 < len(value) <= 256 and _CONTROL.search(value) is None and (
        value.isascii() or _encodes(value))


def _encodes(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@pytest.mark.parametrize("code", range(0x00, 0xA1))
def test_every_ascii_and_latin_control_character_gets_the_verdict_of_the_full_check(code):
    for value in (chr(code), f"task-{chr(code)}-1", f"{chr(code)}x"):
        if _long_way(value):
            assert check_id("task id", value) is value
        else:
            with pytest.raises(InvalidArgument, match="control character"):
                check_id("task id", value)


@pytest.mark.parametrize("value", ["", "a" * 257, "\x7f" * 300])
def test_empty_and_too_long_ids_are_refused_as_before(value):
    with pytest.raises(InvalidArgument, match="empty|characters long"):
        check_id("task id", value)


def test_a_str_subclass_id_is_checked_by_its_characters_not_its_methods():
    class Liar(str):
        def isprintable(self):
            return True

    for value in ("bad\x00id", "tab\tid", "node\x07"):
        with pytest.raises(InvalidArgument, match="control character"):
            check_id("task id", Liar(value))


def _json_bounded_by_the_recursion_limit():
    """Whether json here stops at the interpreter's recursion limit: up to
    CPython 3.13 it does; from 3.14 on, the limit of C code is the C stack,
    and the depths below all encode and decode."""
    deep = "[" * (sys.getrecursionlimit() + 10) + "]" * (sys.getrecursionlimit() + 10)
    try:
        json.loads(deep)
    except RecursionError:
        return True
    return False


def _expected():
    # Where json stops at the limit, the depths around it must show both.
    return {"refused", "kept"} if _json_bounded_by_the_recursion_limit() else {"kept"}


def _nested(depth):
    meta = 1
    for _ in range(depth):
        meta = [meta]
    return {"k": meta}


def test_a_meta_too_deep_to_read_back_is_refused_with_nothing_written(make_journal):
    # Around the interpreter's limit, at this test's stack depth: every
    # registration either reads back with get() or is refused before
    # anything is written; none raises anything but InvalidArgument.
    journal = make_journal()
    limit = sys.getrecursionlimit()
    outcomes = set()
    for depth in range(limit - 60, limit + 5):
        task_id = f"deep-{depth}"
        try:
            record = journal.register(task_id, "node", meta=_nested(depth))
        except InvalidArgument:
            outcomes.add("refused")
            with pytest.raises(UnknownTask):
                journal.get(task_id)
            continue
        outcomes.add("kept")
        assert journal.get(task_id).meta == record.meta
    assert outcomes == _expected()


def test_a_too_deep_meta_from_a_coroutine_is_refused_too(make_journal):
    journal = make_journal()
    limit = sys.getrecursionlimit()

    async def register_all():
        outcomes = set()
        for depth in range(limit - 60, limit + 5):
            task_id = f"deep-{depth}"
            try:
                await journal.register_async(task_id, "node", meta=_nested(depth))
            except InvalidArgument:
                outcomes.add("refused")
                with pytest.raises(UnknownTask):
                    journal.get(task_id)
                continue
            outcomes.add("kept")
            journal.get(task_id)
        return outcomes

    outcomes = asyncio.run(register_all())
    assert outcomes == _expected()


def test_a_str_subclass_id_is_still_an_id():
    class Name(str):
        pass

    value = Name("node-1")
    assert check_id("node id", value) is value


# -- JSON ----------------------------------------------------------------------

_PLAIN = json.JSONEncoder(allow_nan=False, separators=(",", ":"))

VALUES = [
    None, True, 0, -1, 10**30, 1.5, -0.0, 1e300, "", "é\n\t\"\\", "\U0001f600",
    [], {}, [1, [2, [3]]], {"argv": ["python", "-m", "pytest"], "cwd": "/srv", "attempt": 1},
    {"b": 1, "a": 2}, {1: "int key", True: "bool key", None: "none key", 2.5: "float key"},
    ("a", "tuple"), {"nested": {"deeper": [{"x": None}]}}, "\ud800 a lone surrogate",
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_encode_json_gives_what_the_plain_encoder_gives(value):
    assert encode_json("meta", "t", value) == (None if value is None else _PLAIN.encode(value))


@pytest.mark.parametrize("value", VALUES[1:], ids=repr)
def test_the_record_decodes_the_meta_as_json_loads_would(value):
    text = encode_json("meta", "t", value)
    assert read_back_json("meta", "t", text) == json.loads(text)
    assert type(read_back_json("meta", "t", text)) is type(json.loads(text))


@pytest.mark.parametrize(("value", "why"), [
    (float("nan"), "Out of range float"),
    ({"x": float("inf")}, "Out of range float"),
    ({"x": object()}, "not JSON serializable"),
    ({"x": b"bytes"}, "not JSON serializable"),
    ({(1, 2): "tuple key"}, "keys must be"),
])
def test_what_cannot_be_encoded_is_invalid_argument_naming_why(value, why):
    with pytest.raises((TypeError, ValueError), match=why) as plain:
        _PLAIN.encode(value)
    with pytest.raises(InvalidArgument) as ours:
        encode_json("meta", "t", value)
    assert str(ours.value).startswith(f"task 't': meta must be JSON-serialisable ({plain.value}); ")


def test_a_circular_meta_is_refused_and_leaves_no_trace_for_the_next_encode():
    looped: dict[str, object] = {"a": [1]}
    looped["self"] = looped
    for _ in range(3):
        with pytest.raises(InvalidArgument, match="Circular reference"):
            encode_json("meta", "t", looped)
    # A failed encode leaves its markers behind in the encoder that made
    # them; each encode makes its own, so the same objects encode fine now.
    del looped["self"]
    assert encode_json("meta", "t", looped) == '{"a":[1]}'
    shared = [1, 2]
    assert encode_json("meta", "t", {"x": shared, "y": shared}) == '{"x":[1,2],"y":[1,2]}'


def test_one_meta_encoded_by_many_threads_at_once_is_never_called_circular():
    meta = {"argv": ["python", "-m", "pytest", "-q"] * 50, "env": {str(n): n for n in range(200)}}
    expected = _PLAIN.encode(meta)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(300):
                assert encode_json("meta", "t", meta) == expected
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_a_registration_returns_and_stores_the_meta_as_json_made_it(make_journal):
    journal = make_journal()
    meta = {"argv": ("python", "-q"), 7: "seven", "ok": True, "ratio": 0.1}
    record = journal.register("t", "node", meta=meta)
    assert record.meta == {"argv": ["python", "-q"], "7": "seven", "ok": True, "ratio": 0.1}
    meta["ok"] = False  # the caller's dict is not the record's
    assert record.meta["ok"] is True
    assert journal.get("t").meta == record.meta


# -- the store: a lone leader, padded statements ----------------------------------


def test_a_lone_caller_commits_on_its_own_thread_without_queueing(sqlite_url):
    store = open_store(sqlite_url)
    try:
        writer = store._writer
        ran_on, queued = [], []
        real_run = writer._run

        def run(batch):
            ran_on.append((threading.current_thread(), len(batch)))
            return real_run(batch)

        class Counted(queue.SimpleQueue):
            def put(self, job, *args, **kwargs):
                queued.append(job)
                super().put(job, *args, **kwargs)

        writer._run = run
        writer._queue = Counted()
        store.put_task(_row("t0"), new=True)
        with pytest.raises(DuplicateTask):
            store.put_task(_row("t0"), new=True)
        assert ran_on == [(threading.current_thread(), 1)] * 2
        assert queued == []
        assert [row.task_id for row in store.list_tasks()] == ["t0"]
    finally:
        store.close()


def test_a_lone_caller_after_close_is_refused(sqlite_url):
    store = open_store(sqlite_url)
    writer = store._writer
    store.close()
    error = writer.submit([(sqlite_store._INSERT_TASK, _row("late"))])
    assert isinstance(error, StoreError) and "was closed" in str(error)


@pytest.mark.parametrize("count", [2, 3, 5, 7, 9, 33, 63, 64, 65, 100])
def test_a_batch_of_registrations_up_to_a_chunk_is_one_statement(sqlite_url, count):
    store = open_store(sqlite_url)
    try:
        calls = [lambda: store.put_task(_row("lead"), new=True)]
        calls += [lambda n=n: store.put_task(_row(f"t{n}"), new=True) for n in range(count)]
        seen = _statements(store)
        sizes, outcomes = _in_one_batch(store, calls)
        assert sizes == [1, count] and outcomes == [None] * (count + 1)
        # The trace names a statement again for each trigger it fires.
        shared = {sql for sql in seen if "'lead'" not in sql}
        inserts = {sql for sql in shared if sql.startswith("INSERT INTO tasks")}
        chunks = -(-count // sqlite_store._CHUNK)
        assert len(inserts) == chunks
        if chunks == 1:
            assert "BEGIN IMMEDIATE" not in shared and "COMMIT" not in shared
        stored = sorted(row.task_id for row in store.list_tasks())
        assert stored == sorted(["lead"] + [f"t{n}" for n in range(count)])
        # The padding rows insert nothing, and fire no trigger.
        assert store._read("SELECT count(*) FROM tasks WHERE task_id IS NULL") == [(0,)]
    finally:
        store.close()


def test_padded_statements_keep_streams_forward_only_and_clear_stale_rows(sqlite_url, buffer_cls):
    store = open_store(sqlite_url)
    try:
        for n in range(3):
            store.put_task(_row(f"t{n}"), new=True)
        newer, older = _Snap(buffer_cls, 500), _Snap(buffer_cls, 100)
        store.put_streams([(f"t{n}", "stdout", newer.data) for n in range(3)])
        calls = [lambda: store.put_task(_row("lead"), new=True)]
        # Three stream rows in one batch, all older than the stored ones.
        calls += [lambda n=n: store.put_streams([(f"t{n}", "stdout", older.data)]) for n in range(3)]
        sizes, outcomes = _in_one_batch(store, calls)
        assert sizes == [1, 3] and outcomes == [None] * 4
        for n in range(3):
            assert store.get_stream(f"t{n}", "stdout") == newer.data
        assert store._read("SELECT count(*) FROM streams") == [(3,)]
    finally:
        store.close()


def test_a_duplicate_in_a_padded_statement_fails_only_its_caller(sqlite_url):
    store = open_store(sqlite_url)
    try:
        store.put_task(_row("old"), new=True)
        calls = [lambda: store.put_task(_row("lead"), new=True)]
        calls += [lambda n=n: store.put_task(_row("old" if n == 2 else f"t{n}"), new=True)
                  for n in range(5)]
        sizes, outcomes = _in_one_batch(store, calls)
        assert sizes[:2] == [1, 5]
        assert [type(o) for o in outcomes] == [type(None)] * 3 + [DuplicateTask] + [type(None)] * 2
        assert sorted(r.task_id for r in store.list_tasks()) == ["lead", "old", "t0", "t1", "t3", "t4"]
    finally:
        store.close()


def test_the_statement_texts_stay_few(sqlite_url):
    """Every run size from 1 to 200 of every kind uses one of a few texts
    (sqlite3 caches 128 a connection)."""
    texts = set()
    for sql in sqlite_store._MULTI_ROW:
        for count in range(1, 201):
            for size in sqlite_store._statement_sizes(sql, [()] * count):
                texts.add(sql if size == 1 else sqlite_store._TEXTS[sql, size])
    assert len(texts) <= 3 * 7


def test_a_bad_value_in_a_padded_statement_fails_only_its_caller(sqlite_url):
    store = open_store(sqlite_url)
    try:
        bad = TaskRow("bad", "n", "pending", "\ud800", None, None, 1.0, 1.0, None, None)
        calls = [lambda: store.put_task(_row("lead"), new=True)]
        calls += [lambda n=n: store.put_task(bad if n == 1 else _row(f"t{n}"), new=True)
                  for n in range(3)]
        sizes, outcomes = _in_one_batch(store, calls)
        assert sizes[:2] == [1, 3]
        assert outcomes[0] is None and outcomes[1] is None and outcomes[3] is None
        assert isinstance(outcomes[2], InvalidArgument)
        assert sorted(r.task_id for r in store.list_tasks()) == ["lead", "t0", "t2"]
    finally:
        store.close()


# -- waking a batch's callers one after another ----------------------------------------


def test_every_caller_of_a_batch_is_woken_in_turn(sqlite_url):
    store = open_store(sqlite_url)
    try:
        calls = [lambda n=n: store.put_task(_row(f"t{n}"), new=True) for n in range(12)]
        sizes, outcomes = _in_one_batch(store, calls)
        assert sizes == [1, 11] and outcomes == [None] * 12
        assert len(store.list_tasks()) == 12
    finally:
        store.close()


def test_a_caller_that_never_wakes_the_next_holds_it_up_only_until_it_looks(sqlite_url):
    """A caller interrupted between its wake and its waking the next one
    (a KeyboardInterrupt on the main thread) leaves the next to find its job
    finished on its own, within TAKEOVER."""
    from journal.store import _batching

    store = open_store(sqlite_url)
    try:
        writer = store._writer
        real_release = writer._release

        def broken(batch, finished, own=None):
            real_release(batch, finished, own)
            for job in batch:
                job.next = None  # no caller wakes another: each must look itself

        writer._release = broken
        calls = [lambda n=n: store.put_task(_row(f"t{n}"), new=True) for n in range(6)]
        sizes, outcomes = _in_one_batch(store, calls)
        assert sizes == [1, 5] and outcomes == [None] * 6
        assert len(store.list_tasks()) == 6
        assert _batching.TAKEOVER <= 0.05
    finally:
        store.close()
