"""The TaskJournal API of DESIGN.md section 9, on both buffer implementations."""

from __future__ import annotations

import json

import pytest

from journal import (
    DuplicateTask,
    InvalidArgument,
    InvalidTransition,
    JournalClosed,
    JournalError,
    StreamSealed,
    TaskJournal,
    TaskStatus,
    UnknownTask,
)
from journal.validation import MAX_ID_LENGTH


def test_a_task_from_register_to_result(journal, clock):
    record = journal.register("t1", "node-a", meta={"cmd": "make"}, deadline=30)
    assert (record.status, record.node_id, record.meta) == (TaskStatus.PENDING, "node-a", {"cmd": "make"})
    assert record.deadline == clock() + 30 and record.created_at == clock()
    out = journal.stream("t1")
    out.append(b"building\n")
    journal.stream("t1", "thoughts").append(b"compile first")
    clock.advance(2)
    assert journal.start("t1").status is TaskStatus.RUNNING
    out.append(b"done\n")
    done = journal.complete("t1", {"exit_code": 0, "files": ["a.o"]})
    assert done.status is TaskStatus.COMPLETED and done.finished_at == clock()
    assert done.result == {"exit_code": 0, "files": ["a.o"]}
    assert done.streams["stdout"].text() == "building\ndone\n"
    assert done.streams["thoughts"].render() == b"compile first"
    assert journal.get("t1") == done


def test_the_handle_is_the_buffer_itself(journal, buffer_cls):
    journal.register("t", "n")
    handle = journal.stream("t")
    assert type(handle) is buffer_cls
    assert journal.stream("t") is handle  # one buffer per stream, for the task's life


def test_per_stream_limits(make_journal):
    journal = make_journal(head_bytes=4, tail_bytes=4, stream_limits={"thoughts": (1, 2)})
    journal.register("t", "n")
    journal.stream("t").append(b"0123456789")
    journal.stream("t", "thoughts").append(b"0123456789")
    streams = journal.get("t").streams
    assert (streams["stdout"].head, streams["stdout"].tail, streams["stdout"].dropped) == (b"0123", b"6789", 2)
    assert (streams["thoughts"].head, streams["thoughts"].tail) == (b"0", b"89")


def test_records_are_snapshots_not_live_views(journal):
    journal.register("t", "n", meta={"k": [1]})
    out = journal.stream("t")
    out.append(b"one")
    record = journal.get("t")
    out.append(b"two")
    journal.start("t")
    assert record.status is TaskStatus.PENDING and record.streams["stdout"].total == 3
    record.meta["k"].append(2)  # the caller's copy only
    assert journal.get("t").meta == {"k": [1]}
    with pytest.raises(AttributeError):
        record.status = TaskStatus.FAILED  # type: ignore[misc]
    with pytest.raises(TypeError):
        record.streams["x"] = None  # type: ignore[index]


def test_results_are_copied_in(journal):
    journal.register("t", "n")
    result = {"rows": [1, 2]}
    journal.complete("t", result)
    result["rows"].append(3)
    assert journal.get("t").result == {"rows": [1, 2]}


def test_bytes_results_and_failures(journal):
    journal.register("a", "n")
    assert journal.complete("a", bytearray(b"\x00raw")).result == b"\x00raw"
    journal.register("b", "n")
    failed = journal.fail("b", ValueError("bad flag"))
    assert (failed.status, failed.error) == (TaskStatus.FAILED, "ValueError: bad flag")
    journal.register("c", "n")
    cancelled = journal.cancel("c", reason="user asked")
    assert (cancelled.status, cancelled.error) == (TaskStatus.CANCELLED, "user asked")


def test_terminal_transition_seals_the_streams(journal):
    journal.register("t", "n")
    out = journal.stream("t")
    out.append(b"before")
    journal.complete("t", 1)
    with pytest.raises(StreamSealed):
        out.append(b"after")
    with pytest.raises(StreamSealed, match="send output before finishing"):
        journal.stream("t", "stderr")
    assert journal.get("t").streams["stdout"].render() == b"before"
    assert journal.get("t").streams["stdout"].sealed


@pytest.mark.parametrize(
    ("task_id", "message"),
    [
        ("", "must not be empty"),
        ("x" * (MAX_ID_LENGTH + 1), "the limit is 256"),
        ("a\x00b", "control character"),
        ("line\nbreak", "control character"),
        (b"bytes-id", "must be a str"),
        (None, "must be a str"),
    ],
)
def test_bad_task_ids_are_rejected(journal, task_id, message):
    with pytest.raises(InvalidArgument, match=message):
        journal.register(task_id, "n")
    assert journal.stats()["tasks"] == 0


def test_hostile_but_printable_ids_are_just_text(journal):
    for task_id in ("../../etc/passwd", "x" * MAX_ID_LENGTH, "\u4efb\u52d9", "'; DROP TABLE tasks; --"):
        journal.register(task_id, "n")
        assert journal.get(task_id).task_id == task_id


def test_bad_node_ids_and_stream_names(journal):
    with pytest.raises(InvalidArgument, match="node id"):
        journal.register("t", "")
    journal.register("t", "n")
    with pytest.raises(InvalidArgument, match="stream name"):
        journal.stream("t", "a\tb")
    with pytest.raises(InvalidArgument, match="node id"):
        journal.heartbeat(42)


def test_unserialisable_result_changes_nothing(journal):
    journal.register("t", "n")
    with pytest.raises(InvalidArgument, match="'t': the result must be JSON-serialisable"):
        journal.complete("t", {"when": object()})
    with pytest.raises(InvalidArgument, match="JSON"):
        journal.complete("t", float("nan"))
    assert journal.get("t").status is TaskStatus.PENDING
    assert journal.complete("t", None).result is None


def test_bad_meta_and_deadline(journal):
    with pytest.raises(InvalidArgument, match="meta"):
        journal.register("t", "n", meta={1, 2})
    with pytest.raises(InvalidArgument, match="deadline"):
        journal.register("t", "n", deadline=-3)
    assert journal.stats()["tasks"] == 0


def test_duplicate_register_of_a_live_id(journal):
    journal.register("t", "node-a")
    with pytest.raises(DuplicateTask, match="'t' is already registered .*node-a"):
        journal.register("t", "node-b")
    journal.complete("t", 0)
    with pytest.raises(DuplicateTask):
        journal.register("t", "node-b")  # its result is still held


def test_illegal_moves_name_both_states(journal):
    journal.register("t", "n")
    journal.complete("t", 0)
    with pytest.raises(InvalidTransition, match="COMPLETED to RUNNING"):
        journal.start("t")
    with pytest.raises(InvalidTransition, match="COMPLETED to FAILED"):
        journal.fail("t", "late")


def test_unknown_ids(journal):
    for call in (journal.get, journal.start, journal.stream, journal.wait):
        with pytest.raises(UnknownTask, match="no task 'ghost'") as caught:
            call("ghost")
        assert isinstance(caught.value, JournalError) and isinstance(caught.value, KeyError)


def test_in_flight_stats_and_reattach(journal, clock):
    journal.register("a", "n1")
    clock.advance(1)
    journal.register("b", "n2")
    journal.register("c", "n2")
    journal.complete("c", None)
    journal.stream("a").append(b"x" * 50)
    assert [r.task_id for r in journal.in_flight()] == ["a", "b"]
    moved = journal.reattach("b", "n3")
    assert moved.node_id == "n3" and not moved.detached
    with pytest.raises(InvalidTransition, match="already ended"):
        journal.reattach("c", "n3")
    stats = journal.stats()
    assert stats["tasks"] == 3 and stats["by_status"]["pending"] == 2
    assert stats["by_status"]["completed"] == 1
    assert (stats["streams"], stats["bytes_written"], stats["bytes_held"]) == (1, 50, 50)
    assert json.loads(json.dumps(stats)) == stats


def test_close_and_context_manager(buffer_cls):
    from journal import JournalConfig

    with TaskJournal(config=JournalConfig(sweep_interval=0.01), buffer_class=buffer_cls) as journal:
        journal.register("t", "n")
        sweeper = journal._maintenance.thread
        assert sweeper.is_alive()
    assert not sweeper.is_alive()
    with pytest.raises(JournalClosed):
        journal.register("u", "n")
    journal.close()  # idempotent
    assert journal.get("t").status is TaskStatus.PENDING  # reads still work


def test_from_env(monkeypatch):
    monkeypatch.setenv("JOURNAL_HEAD_BYTES", "3")
    monkeypatch.setenv("JOURNAL_SWEEP_INTERVAL", "0")
    with TaskJournal.from_env() as journal:
        journal.register("t", "n")
        journal.stream("t").append(b"abcdef")
        assert journal.get("t").streams["stdout"].head == b"abc"


def test_bad_store_url():
    with pytest.raises(InvalidArgument, match="unsupported store URL"):
        TaskJournal("ftp://x")


def test_list_tasks_newest_first_with_filters(journal, clock):
    for n, node in enumerate(["a", "b", "a"]):
        journal.register(f"t{n}", node)
        clock.advance(1)
    journal.complete("t1", None)
    assert [r.task_id for r in journal.list_tasks()] == ["t2", "t1", "t0"]
    assert [r.task_id for r in journal.list_tasks(node_id="a")] == ["t2", "t0"]
    assert [r.task_id for r in journal.list_tasks(status=TaskStatus.COMPLETED)] == ["t1"]
    assert [r.task_id for r in journal.list_tasks(limit=1)] == ["t2"]
    assert journal.list_tasks()[0].streams == {}


def test_records_show_the_highlights_of_the_dropped_middle(make_journal):
    journal = make_journal(head_bytes=16, tail_bytes=16, stream_highlights={"quiet": []})
    journal.register("t", "n")
    lines = b"".join(b"step %03d ok\n" % n for n in range(50))
    for name in ("stdout", "quiet"):
        out = journal.stream("t", name)
        out.append(lines + b"cc: fatal error: no input files\n" + lines)
    view = journal.get("t").streams["stdout"]
    assert [h.text for h in view.highlights] == [b"cc: fatal error: no input files"]
    assert view.highlights[0].line == 51 and view.dropped_lines == 101 - 1 - 2  # head, tail
    assert "[line 51] cc: fatal error: no input files" in view.text()
    assert view.render() == journal.stream("t").render()
    quiet = journal.get("t").streams["quiet"]
    assert quiet.highlights == () and quiet.dropped_lines is None
    assert "fatal" not in quiet.text()


def test_a_failed_builds_first_error_in_the_middle_of_10_mb_is_in_its_record(make_journal):
    journal = make_journal()  # default limits and highlight rules
    journal.register("build", "node-1")
    out = journal.stream("build")
    line = b"cc -O2 -c src/module_%06d.c -o build/module_%06d.o\n"
    for n in range(100_000):
        out.append(line % (n, n))
    out.append(b"src/parser.c:412:9: error: 'tokn' undeclared (first use in this function)\n")
    for n in range(100_000, 200_000):
        out.append(line % (n, n))
    journal.fail("build", "exit status 1")
    view = journal.get("build").streams["stdout"]
    assert view.total > 10_000_000
    text = view.text()
    assert "[line 100001] src/parser.c:412:9: error: 'tokn' undeclared" in text
    assert len(text) < 45_000


def test_a_failed_task_can_keep_a_result(make_journal):
    journal = make_journal()
    journal.register("t", "n")
    record = journal.fail("t", "exit status 2", result={"exit_code": 2})
    assert (record.status, record.error, record.result) == (TaskStatus.FAILED, "exit status 2", {"exit_code": 2})
    assert journal.get("t").result == {"exit_code": 2}
    journal.register("u", "n")
    with pytest.raises(InvalidArgument):
        journal.fail("u", "x", result=object())
    assert journal.get("u").status is TaskStatus.PENDING  # the bad result changed nothing
