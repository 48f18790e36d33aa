"""SQLite: one owner per journal file, whatever name it is opened by; a
forked child never writes through its parent's connection; files are
private and a planted lock-file symlink is never followed."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from journal import JournalConfig, TaskJournal
from journal.errors import JournalClosed, StoreError, StoreLocked
from journal.store import TaskRow, open_store

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX links, fork and modes")


def _path(url):
    return url[len("sqlite:///"):]


def _row(task_id):
    return TaskRow(task_id, "n", "pending", None, None, None, 1.0, 1.0, None, None)


@posix_only
def test_a_symlink_to_a_held_journal_is_locked(sqlite_url, tmp_path):
    owner = open_store(sqlite_url)
    try:
        os.symlink(_path(sqlite_url), tmp_path / "alias.db")
        with pytest.raises(StoreLocked):
            open_store(f"sqlite:///{tmp_path / 'alias.db'}")
    finally:
        owner.close()
    open_store(f"sqlite:///{tmp_path / 'alias.db'}").close()  # free again once closed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the file's own lock is Linux's")
def test_a_hard_link_to_a_held_journal_is_locked(sqlite_url, tmp_path):
    owner = open_store(sqlite_url)
    try:
        os.link(_path(sqlite_url), tmp_path / "twin.db")
        with pytest.raises(StoreLocked):
            open_store(f"sqlite:///{tmp_path / 'twin.db'}")
        owner.put_task(_row("still-mine"), new=True)
    finally:
        owner.close()
    again = open_store(f"sqlite:///{tmp_path / 'twin.db'}")
    assert again.get("still-mine") is not None
    again.close()


@posix_only
@pytest.mark.parametrize("call", ["complete", "register", "put_task", "get"])
def test_a_forked_child_cannot_use_its_parents_journal(sqlite_url, buffer_cls, call):
    config = JournalConfig(sweep_interval=0, checkpoint_interval=3600)
    journal = TaskJournal(sqlite_url, config=config, buffer_class=buffer_cls)
    try:
        journal.register("t", "n")
        journal.start("t")
        journal.stream("t").append(b"parent\n")
        pid = os.fork()
        if pid == 0:  # the child: exit 0 only if it was refused clearly
            code = 3
            try:
                if call == "complete":
                    journal.complete("t", "from the child")
                elif call == "register":
                    journal.register("child", "n")
                elif call == "put_task":
                    journal._store.put_task(_row("child"), new=True)
                else:
                    journal._store.get("t")
            except (StoreError, JournalClosed) as exc:
                # The store refuses (StoreError); the journal layer may say so first.
                text = str(exc)
                if isinstance(exc, JournalClosed) and call in ("put_task", "get"):
                    text = ""
                code = 0 if f"process {os.getppid()}" in text and "fork" in text else 4
            except BaseException:  # noqa: BLE001 - reported through the exit code
                code = 5
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        # The parent keeps its lock and its writes land.
        with pytest.raises(StoreLocked):
            open_store(sqlite_url)
        journal.complete("t", "from the parent")
    finally:
        journal.close()
    again = TaskJournal(sqlite_url, config=config, buffer_class=buffer_cls)
    try:
        record = again.get("t")
        assert record.result == "from the parent"
        assert record.streams["stdout"].total == len(b"parent\n")
        with pytest.raises(Exception):
            again.get("child")
    finally:
        again.close()


@posix_only
def test_a_planted_lock_symlink_is_refused_and_its_target_untouched(sqlite_url, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious contents\n")
    os.symlink(victim, _path(sqlite_url) + ".lock")
    with pytest.raises(StoreError):
        open_store(sqlite_url)
    assert victim.read_bytes() == b"precious contents\n"


@posix_only
def test_a_planted_lock_hard_link_is_refused_and_its_target_untouched(sqlite_url, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious contents\n")
    os.link(victim, _path(sqlite_url) + ".lock")
    with pytest.raises(StoreError):
        open_store(sqlite_url)
    assert victim.read_bytes() == b"precious contents\n"


@posix_only
def test_a_world_readable_journal_is_made_private(sqlite_url, buffer_cls):
    path = _path(sqlite_url)
    config = JournalConfig(sweep_interval=0, checkpoint_interval=3600)
    TaskJournal(sqlite_url, config=config, buffer_class=buffer_cls).close()
    os.chmod(path, 0o644)
    for suffix in ("-wal", "-shm"):  # left behind by, say, a crash
        with open(path + suffix, "wb"):
            pass
        os.chmod(path + suffix, 0o644)
    journal = TaskJournal(sqlite_url, config=config, buffer_class=buffer_cls)
    try:
        journal.register("t", "n")
        journal.start("t")
        journal.stream("t").append(b"secret\n")
        journal.complete("t")
        for suffix in ("", "-wal", "-shm", ".lock"):
            mode = stat.S_IMODE(os.stat(path + suffix).st_mode)
            assert mode == 0o600, (suffix, oct(mode))
    finally:
        journal.close()


@posix_only
def test_new_wal_files_of_a_world_readable_journal_are_private(sqlite_url):
    path = _path(sqlite_url)
    open_store(sqlite_url).close()
    os.chmod(path, 0o644)
    store = open_store(sqlite_url)
    try:
        store.put_task(_row("t"), new=True)
        for suffix in ("", "-wal", "-shm"):
            assert stat.S_IMODE(os.stat(path + suffix).st_mode) == 0o600, suffix
    finally:
        store.close()
