"""Fixtures shared by the suite.

``buffer_cls`` runs a test once per HeadTailBuffer implementation, the way
propcache and multidict test their twins.  Tests take the class from the
fixture and never import an implementation themselves.
"""

from __future__ import annotations

import importlib
import os

import pytest

from journal import _buffer_py

NO_EXTENSIONS = os.environ.get("JOURNAL_NO_EXTENSIONS", "") not in ("", "0")


def _compiled_buffer_class():
    if NO_EXTENSIONS:
        pytest.skip("JOURNAL_NO_EXTENSIONS is set: this run covers the pure twin only")
    # No fallback here: when the extension is missing the test must fail.
    return importlib.import_module("journal._buffer").HeadTailBuffer


@pytest.fixture(
    scope="session",
    params=[pytest.param("c", marks=pytest.mark.c_extension), "python"],
)
def buffer_cls(request):
    """The HeadTailBuffer class of one implementation."""
    if request.param == "c":
        return _compiled_buffer_class()
    return _buffer_py.HeadTailBuffer


@pytest.fixture(scope="session")
def both_buffer_classes():
    """(compiled, pure): for tests that compare the twins directly."""
    return _compiled_buffer_class(), _buffer_py.HeadTailBuffer


class FakeClock:
    """A wall clock that moves only when a test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request, tmp_path):
    """A fresh store of each kind: every journal test runs on all of them."""
    if request.param == "memory":
        return "memory://"
    return f"sqlite:///{tmp_path / 'journal.db'}"


def _journal_factory(url, buffer_cls, clock):
    """A function that opens TaskJournals on ``url`` with the fake clock and
    the sweeper off (tests call sweep() when time has moved), and a list of
    what it opened, for closing."""
    from journal import JournalConfig, TaskJournal

    opened = []

    def make(store_url=url, **config):
        config.setdefault("sweep_interval", 0)
        journal = TaskJournal(
            store_url, config=JournalConfig(**config), clock=clock, buffer_class=buffer_cls
        )
        opened.append(journal)
        return journal

    return make, opened


@pytest.fixture
def make_journal(buffer_cls, clock, store_url):
    """Journals on this run's store and buffer implementation; all closed
    at the end of the test."""
    make, opened = _journal_factory(store_url, buffer_cls, clock)
    yield make
    for journal in opened:
        journal.close()


@pytest.fixture
def reopen(buffer_cls, clock, sqlite_url):
    """Journals on one SQLite file, as successive hub processes would open it."""
    make, opened = _journal_factory(sqlite_url, buffer_cls, clock)
    yield make
    for journal in opened:
        journal.close()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'journal.db'}"


@pytest.fixture
def journal(make_journal):
    return make_journal()
