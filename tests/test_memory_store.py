"""memory://: expiry and listings under lock-free registrations from many threads."""

from __future__ import annotations

import threading
import time

import pytest

from journal import InvalidArgument, JournalConfig, TaskJournal, TaskStatus
from journal.store import open_store
from journal.store.base import TaskRow
from journal.store.memory import MemoryStore

THREADS = 8
PER_WORKER = 40_000


def _row(task_id, status="pending", finished_at=None, created_at=1.0):
    return TaskRow(task_id, "node", status, None, None, None, created_at, created_at,
                   finished_at, None)


def test_expiry_races_lock_free_registrations_from_8_threads():
    """The store alone, real threads: 8 register and complete rows without a
    lock while another thread expires, counts and lists in a loop.  No call
    may raise (a dict iterated while it grows did, in nearly every sweep),
    and once the writers stop, one expiry past the TTL removes every
    finished row and leaves a tombstone for each."""
    ttl = 0.05
    store = MemoryStore()
    stop = threading.Event()
    errors: list[BaseException] = []
    expired: list[str] = []
    sweeps = 0
    written = [0] * THREADS

    def work(worker):
        try:
            for n in range(PER_WORKER):
                if stop.is_set():
                    break
                task_id, now = f"w{worker}-{n}", time.time()
                store.put_task(_row(task_id, created_at=now), new=True)
                store.put_task(_row(task_id, "completed", finished_at=now, created_at=now))
                written[worker] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def sweep():
        nonlocal sweeps
        while not stop.is_set():
            try:
                now = time.time()
                expired.extend(store.expire_finished(cutoff=now - ttl, tombstone_until=now + 60))
                store.count_by_status()
                store.list_tasks(status="completed", limit=10)
                store.list_tasks(node_id="node")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            sweeps += 1

    _run(work, sweep, seconds=2.0, stop=stop)
    assert not errors, f"{len(errors)} errors in {sweeps} sweeps, first: {errors[0]!r}"
    assert sweeps >= 1
    time.sleep(ttl * 2)
    expired.extend(store.expire_finished(cutoff=time.time() - ttl, tombstone_until=time.time() + 60))
    assert len(expired) == len(set(expired)) == sum(written)
    assert store.list_tasks() == [] and store.count_by_status() == {}
    assert all(store.tombstoned(task_id) for task_id in expired[:: max(1, len(expired) // 500)])


def _run(work, sweep, seconds, stop):
    threads = [threading.Thread(target=work, args=(w,)) for w in range(THREADS)]
    threads.append(threading.Thread(target=sweep))
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and any(t.is_alive() for t in threads[:-1]):
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)


def test_sweeps_race_lock_free_registrations_and_every_old_result_expires(buffer_cls):
    """8 threads register and complete tasks while another sweeps in a loop
    with a short real result_ttl: no sweep raises, and once the writers stop
    one last sweep past the TTL leaves no finished task behind."""
    ttl = 0.05
    journal = TaskJournal("memory://", buffer_class=buffer_cls,
                          config=JournalConfig(result_ttl=ttl, sweep_interval=0))
    stop = threading.Event()
    errors: list[BaseException] = []
    sweeps = expired = 0
    completed = [0] * THREADS

    def work(worker):
        n = 0
        try:
            while not stop.is_set():
                task_id = f"w{worker}-{n}"
                journal.register(task_id, f"node-{worker}")
                journal.stream(task_id).append(b"x" * 16)
                journal.complete(task_id, n)
                completed[worker] += 1
                n += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def sweep():
        nonlocal sweeps, expired
        try:
            while not stop.is_set():
                expired += journal.sweep()["expired"]
                journal.stats()
                journal.list_tasks(status=TaskStatus.COMPLETED, limit=10)
                sweeps += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(THREADS)]
    threads.append(threading.Thread(target=sweep))
    try:
        for thread in threads:
            thread.start()
        time.sleep(3.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    try:
        assert not errors, f"{len(errors)} errors, first: {errors[0]!r}"
        assert sweeps >= 1
        time.sleep(ttl * 2)
        expired += journal.sweep()["expired"]
        assert expired == sum(completed)
        assert journal.list_tasks() == []
        assert sum(journal.stats()["by_status"].values()) == 0
    finally:
        journal.close()


def test_expire_finished_keeps_a_row_replaced_since_it_was_seen():
    store = MemoryStore()
    store.put_task(_row("t", "completed", finished_at=5.0), new=True)
    seen = store._rows["t"]
    replacement = seen._replace(updated_at=9.0)
    original = store._rows.copy

    def copy_then_replace():
        snapshot = original()
        store._rows["t"] = replacement  # a write between the snapshot and the delete
        return snapshot

    store._rows = type("Rows", (dict,), {})(store._rows)
    store._rows.copy = copy_then_replace  # type: ignore[method-assign]
    assert store.expire_finished(cutoff=10.0, tombstone_until=20.0) == []
    assert store.get("t").row is replacement and not store.tombstoned("t")


def test_tombstone_goes_down_before_the_row_goes():
    """A re-registration of an expired id must never find a tombstone laid
    after its own row: the tombstone is written first, then the row removed."""
    store = MemoryStore()
    store.put_task(_row("t", "completed", finished_at=1.0), new=True)
    order = []

    class Watch(dict):
        def __delitem__(self, key):
            order.append(("row gone", store.tombstoned(key)))
            super().__delitem__(key)

        def pop(self, key, *default):
            order.append(("row gone", store.tombstoned(key)))
            return super().pop(key, *default)

    store._rows = Watch(store._rows)
    store.expire_finished(cutoff=2.0, tombstone_until=3.0)
    assert order == [("row gone", True)]
@pytest.mark.parametrize("url", [None, 3, b"memory://", ["memory://"]])
def test_open_store_refuses_a_url_that_is_not_a_str(url):
    with pytest.raises(InvalidArgument, match=r"the store URL must be a str"):
        open_store(url)


@pytest.mark.parametrize(("url", "message"), [
    ("", "is empty"),
    ("   ", "looks like"),
    ("memory", "looks like"),
    ("ftp://x", "unsupported store URL 'ftp://x'"),
    ("nosuch://x", "unsupported store URL"),
    ("://x", "unsupported store URL"),
    ("memory://elsewhere", "memory:// takes no path"),
    ("memory://?x=1", "memory:// takes no path"),
    ("memory://#frag", "memory:// takes no path"),
])
def test_open_store_refuses_bad_urls_with_invalid_argument(url, message):
    with pytest.raises(InvalidArgument, match=message):
        open_store(url)


def test_open_store_memory():
    store = open_store("memory://")
    assert isinstance(store, MemoryStore) and store.url == "memory://"


def test_forgetting_tombstones_races_registrations_that_clear_them():
    store = MemoryStore()
    # Tombstones not yet due, so every pass walks all of them.
    store._tombstones.update((f"old-{n}", 5.0) for n in range(200_000))
    stop = threading.Event()
    errors: list[BaseException] = []
    sweeps = 0

    def work(worker):
        try:
            for n in range(PER_WORKER // 4):
                if stop.is_set():
                    break
                task_id = f"w{worker}-{n}"
                store._tombstones[task_id] = 0.0  # as an earlier expiry leaves it
                store.put_task(_row(task_id), new=True)  # clears it, lock-free
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def sweep():
        nonlocal sweeps
        while not stop.is_set():
            try:
                store.forget_tombstones(now=1.0)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            sweeps += 1

    _run(work, sweep, seconds=2.0, stop=stop)
    assert not errors, f"{len(errors)} errors in {sweeps} sweeps, first: {errors[0]!r}"
    assert store.forget_tombstones(now=1.0) == 0
    assert len(store._tombstones) == 200_000
    assert store.forget_tombstones(now=6.0) == 200_000 and store._tombstones == {}
