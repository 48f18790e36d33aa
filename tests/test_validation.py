"""The checks made on what callers hand the journal: each bad value is an
InvalidArgument raised before anything changes, never a stray built-in error
from deep inside a store or the standard library."""

from __future__ import annotations

import math
import sys
import threading

import pytest

from journal import InvalidArgument, JournalError, TaskStatus
from journal import validation
from journal.validation import check_deadline, check_id, check_timeout, encode_json

LONE_SURROGATES = ["\ud800", "ab\udfffcd", "task-\udc80", "\udbff\udc00\ud800"]


# -- ids: text the stores can hold -------------------------------------------


@pytest.mark.parametrize(("value", "position"), [
    ("\ud800", 0), ("ab\udfffcd", 2), ("task-\udc80", 5),
    # Two surrogates in a str are two lone code points, never a character.
    ("\udbff\udc00", 0), ("ünï\ud800", 3),
])
def test_check_id_refuses_lone_surrogates_naming_the_position(value, position):
    with pytest.raises(InvalidArgument, match=rf"task id .* at position {position}\b.*UTF-8"):
        check_id("task id", value)


def test_check_id_keeps_every_valid_unicode_id():
    for value in ("plain", "ünïcödé", "任务-1", "emoji-\U0001f600", "a" * 256, "\ufffd"):
        assert check_id("task id", value) is value


def test_the_stream_name_and_node_id_checks_refuse_surrogates_too():
    with pytest.raises(InvalidArgument, match="stream name"):
        check_id("stream name", "std\udcffout")
    with pytest.raises(InvalidArgument, match="node id"):
        check_id("node id", "\ud800node")


def test_a_surrogate_id_changes_nothing_and_the_next_write_works(make_journal):
    journal = make_journal()
    for bad in LONE_SURROGATES:
        with pytest.raises(InvalidArgument, match="UTF-8"):
            journal.register(bad, "node-1")
        with pytest.raises(InvalidArgument, match="UTF-8"):
            journal.register("t-" + str(len(bad)), bad)
    # The refused calls left no half-open transaction behind.
    journal.register("after", "node-1")
    journal.start("after")
    with pytest.raises(InvalidArgument, match="stream name"):
        journal.stream("after", "std\ud800out")
    journal.stream("after").append(b"ok\n")
    journal.complete("after", {"ok": True})
    assert journal.checkpoint() >= 0  # no stream named with a surrogate stops it
    record = journal.get("after")
    assert record.status is TaskStatus.COMPLETED and record.result == {"ok": True}
    assert record.streams["stdout"].total == 3
    assert [r.task_id for r in journal.list_tasks()] == ["after"]


def test_a_meta_or_result_with_a_lone_surrogate_round_trips_or_is_refused_cleanly(make_journal):
    journal = make_journal()
    meta = {"cmd": "echo \ud800", "\udcff": ["x\udfff"]}
    try:
        journal.register("t", "node-1", meta=meta)
    except InvalidArgument:
        journal.register("t", "node-1")
    else:
        assert journal.get("t").meta == meta
    try:
        journal.complete("t", ["out \udc80"])
    except InvalidArgument:
        journal.complete("t", "plain")
        assert journal.get("t").result == "plain"
    else:
        assert journal.get("t").result == ["out \udc80"]
    journal.register("t2", "node-1")
    assert {r.task_id for r in journal.list_tasks()} == {"t", "t2"}


def test_check_id_on_ascii_ids_stays_cheap():
    # The registration path calls it twice per task: the surrogate check must
    # not add an encode of ASCII ids (measured loosely, against a plain call).
    import timeit

    ids = [f"task-{n:08d}" for n in range(2000)]
    took = min(timeit.repeat(lambda: [check_id("task id", i) for i in ids], number=5, repeat=5))
    assert took / (5 * len(ids)) < 5e-6


# -- JSON: depth ---------------------------------------------------------------


def _nested(depth):
    value: object = []
    for _ in range(depth):
        value = [value]
    return value


def test_encode_json_turns_a_too_deep_value_into_invalid_argument():
    with pytest.raises(InvalidArgument, match=r"task 't': meta .*nested too deep"):
        encode_json("meta", "t", {"a": _nested(100_000)})


def test_deep_meta_and_result_are_refused_before_anything_changes(make_journal):
    journal = make_journal()
    with pytest.raises(InvalidArgument, match="nested too deep"):
        journal.register("t", "node-1", meta={"deep": _nested(100_000)})
    journal.register("t", "node-1")
    with pytest.raises(InvalidArgument, match="nested too deep"):
        journal.complete("t", _nested(100_000))
    assert journal.get("t").status is TaskStatus.PENDING
    journal.complete("t", _nested(50))
    assert journal.get("t").result == _nested(50)


# -- deadlines -------------------------------------------------------------------


@pytest.mark.parametrize("deadline", [pytest.param(10**400, id="10**400"), pytest.param(-(10**400), id="-10**400"), 10**20, 1e300, 10 * 366 * 86400.0])
def test_huge_deadlines_are_invalid_arguments(deadline):
    with pytest.raises(InvalidArgument, match=r"deadline .*10 years"):
        check_deadline("t", deadline)


@pytest.mark.parametrize("deadline", [float("inf"), float("nan"), 0, -1, True, "5"])
def test_other_bad_deadlines(deadline):
    with pytest.raises(InvalidArgument, match="deadline"):
        check_deadline("t", deadline)


def test_deadlines_up_to_ten_years_are_kept():
    assert check_deadline("t", 0.001) == 0.001
    assert check_deadline("t", validation.MAX_SECONDS) == float(validation.MAX_SECONDS)


def test_register_with_a_huge_deadline_changes_nothing(make_journal):
    journal = make_journal()
    with pytest.raises(InvalidArgument, match="deadline"):
        journal.register("t", "node-1", deadline=10**400)
    journal.register("t", "node-1", deadline=3600)
    assert journal.get("t").deadline is not None


# -- timeouts --------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [float("inf"), threading.TIMEOUT_MAX,
                                     threading.TIMEOUT_MAX * 2, pytest.param(10**400, id="10**400"), 1e308])
def test_check_timeout_waits_without_a_limit_for_inf_and_past_timeout_max(timeout):
    assert check_timeout("t", timeout) is None


@pytest.mark.parametrize(("timeout", "expected"), [
    (None, None), (0, 0.0), (-5, 0.0), (-math.inf, 0.0), (1.5, 1.5), (30, 30.0),
])
def test_check_timeout_keeps_ordinary_values(timeout, expected):
    assert check_timeout("t", timeout) == expected


@pytest.mark.parametrize("timeout", [float("nan"), True, "1", [1]])
def test_check_timeout_refuses_what_is_not_seconds(timeout):
    with pytest.raises(InvalidArgument, match="timeout"):
        check_timeout("t", timeout)


@pytest.mark.parametrize("timeout", [float("inf"), threading.TIMEOUT_MAX + 1, pytest.param(10**400, id="10**400")])
def test_wait_with_an_unbounded_timeout_ends_with_the_task(make_journal, timeout):
    from in_thread import in_thread

    journal = make_journal()
    journal.register("t", "node-1")
    waiting = in_thread(journal.wait, "t", timeout)
    journal.complete("t", 7)
    assert waiting().result == 7


# -- list_tasks filters -----------------------------------------------------------


def test_check_status_accepts_none_members_and_their_values():
    assert validation.check_status(None) is None
    for status in TaskStatus:
        assert validation.check_status(status) is status
        assert validation.check_status(status.value) is status


@pytest.mark.parametrize("value", ["bogus", "", "RUNNING ", 3, True, b"running", ["running"]])
def test_check_status_refuses_the_rest_listing_the_valid_values(value):
    with pytest.raises(InvalidArgument, match=r"status .*pending, running, completed"):
        validation.check_status(value)


def test_check_limit():
    assert validation.check_limit(None) is None
    assert validation.check_limit(0) == 0
    assert validation.check_limit(25) == 25
    assert validation.check_limit(sys.maxsize) == sys.maxsize
    assert validation.check_limit(10**30) is None  # more than any store holds: no limit
    for bad in (-1, -(10**30), True, False, 1.0, 2.5, float("inf"), "5", [5]):
        with pytest.raises(InvalidArgument, match="limit"):
            validation.check_limit(bad)


def test_the_errors_are_in_the_hierarchy():
    for call, value in ((validation.check_status, "x"), (validation.check_limit, -1),
                        (check_timeout, float("nan"))):
        with pytest.raises(JournalError):
            call(value) if call is not check_timeout else call("t", value)


# -- rows read back ----------------------------------------------------------------


def test_a_stored_row_with_a_bad_status_or_json_is_store_corrupt_not_a_bare_error():
    from journal import StoreCorrupt
    from journal.records import record_from_row
    from journal.store.base import TaskRow

    good = TaskRow("t", "n", "pending", None, None, None, 1.0, 1.0, None, None)
    assert record_from_row(good, {}).status is TaskStatus.PENDING
    for bad, message in ((good._replace(status="bogus"), "status 'bogus'"),
                         (good._replace(meta_json="{not json"), "not JSON"),
                         (good._replace(result="[" * 100_000), "not JSON")):
        with pytest.raises(StoreCorrupt, match=message):
            record_from_row(bad, {})
