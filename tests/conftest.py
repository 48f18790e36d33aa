"""Fixtures shared by the suite.

``buffer_cls`` runs a test once per HeadTailBuffer implementation, the way
propcache and multidict test their twins.  Tests take the class from the
fixture and never import an implementation themselves; a test that needs
the twin in a child process passes ``_selection.name_of(buffer_cls)`` and
the child calls ``_selection.load(name)``.  Whether this run is a pure one
is decided by ``journal._selection``, as for the package itself.
"""

from __future__ import annotations

import os
import shutil
import uuid

import pytest

from journal import _selection
from redis_server import RedisClusterServers, RedisServer

#: Why this run covers the pure twin only (the switch is set, or not
#: CPython), or None: then the compiled buffer must be there.
PURE_REASON = _selection.pure_reason()
NO_EXTENSIONS = PURE_REASON is not None


def _buffer_class(name):
    if name == _selection.COMPILED and NO_EXTENSIONS:
        pytest.skip(f"compiled buffer not tested: {PURE_REASON}")
    # No fallback here: when the extension is missing the test must fail.
    return _selection.load(name)


@pytest.fixture(
    scope="session",
    params=[pytest.param(_selection.COMPILED, marks=pytest.mark.c_extension), _selection.PURE],
)
def buffer_cls(request):
    """The HeadTailBuffer class of one implementation."""
    return _buffer_class(request.param)


@pytest.fixture(scope="session")
def both_buffer_classes():
    """(compiled, pure): for tests that compare the twins directly."""
    return _buffer_class(_selection.COMPILED), _buffer_class(_selection.PURE)


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


def _need_redis_server(variable):
    if shutil.which("redis-server") is None:
        message = (f"no Redis: set {variable}, or put redis-server on PATH "
                   "(apt-get install redis-server)")
        if os.environ.get("JOURNAL_REQUIRE_REDIS"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def redis_single(tmp_path_factory):
    """The base URL of one Redis server for the suite.

    ``JOURNAL_TEST_REDIS_URL`` names one (``.ci/run`` starts it); otherwise a
    ``redis-server`` on PATH is started on a free loopback port for this
    session.  With neither, the Redis tests fail when ``JOURNAL_REQUIRE_REDIS``
    is set (CI) and are skipped otherwise.
    """
    url = os.environ.get("JOURNAL_TEST_REDIS_URL")
    if url:
        yield url
        return
    _need_redis_server("JOURNAL_TEST_REDIS_URL")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


def _cluster(tmp_path_factory, variable, replicas):
    url = os.environ.get(variable)
    if url:
        yield url
        return
    _need_redis_server(variable)
    cluster = RedisClusterServers(tmp_path_factory.mktemp("cluster"), 3, replicas)
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """The URL of a node of a 3-primary Redis Cluster:
    ``JOURNAL_TEST_REDIS_CLUSTER_URL`` (``.ci/run``), or one started here."""
    yield from _cluster(tmp_path_factory, "JOURNAL_TEST_REDIS_CLUSTER_URL", 0)


@pytest.fixture(scope="session")
def redis_replicated(tmp_path_factory):
    """The URL of a node of a 3-primary, 3-replica Redis Cluster:
    ``JOURNAL_TEST_REDIS_REPLICATED_URL`` (``.ci/run``), or one started here.
    Tests never kill its nodes (a failover test starts a cluster of its own)."""
    yield from _cluster(tmp_path_factory, "JOURNAL_TEST_REDIS_REPLICATED_URL", 1)


@pytest.fixture(scope="session", params=["server", "cluster"])
def redis_server(request):
    """The base URL of a Redis for the suite: every test that runs on Redis
    runs on one server and on a 3-primary Redis Cluster."""
    return request.getfixturevalue("redis_single" if request.param == "server" else "redis_cluster")


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of the test's own, which it may freeze, fill or kill."""
    started = RedisServer(tmp_path)
    started.start()
    yield started
    if started.process is not None:
        started.thaw()  # a test that froze it and failed before thawing
    started.stop()


def _namespaced(server):
    """A Redis store URL with a namespace of its own: tests never see each
    other's keys.  The replica id is fixed, as for a hub that restarts."""
    return f"{server}?prefix=test-{uuid.uuid4().hex}&replica=hub-1"


@pytest.fixture
def redis_url(redis_server):
    """A fresh Redis store URL, on one server and on a cluster."""
    return _namespaced(redis_server)


def _store_url(kind, tmp_path, request):
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.db'}"
    if kind == "redis-cluster":
        return _namespaced(request.getfixturevalue("redis_cluster"))
    return _namespaced(request.getfixturevalue("redis_single"))


_REDIS_KINDS = [pytest.param("redis", marks=pytest.mark.redis),
                pytest.param("redis-cluster", marks=pytest.mark.redis)]


@pytest.fixture(params=["memory", "sqlite", *_REDIS_KINDS])
def store_url(request, tmp_path):
    """A fresh store of each kind: every journal test runs on all of them,
    Redis as one server and as a 3-primary cluster."""
    return _store_url(request.param, tmp_path, request)


@pytest.fixture(params=["sqlite", *_REDIS_KINDS])
def durable_url(request, tmp_path):
    """A fresh store of each kind that outlives its journal."""
    return _store_url(request.param, tmp_path, request)


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


def _journals(url, buffer_cls, clock):
    """Yield a journal factory on ``url``; close what it opened afterwards."""
    make, opened = _journal_factory(url, buffer_cls, clock)
    yield make
    for journal in opened:
        journal.close()


@pytest.fixture
def make_journal(buffer_cls, clock, store_url):
    """Journals on this run's store and buffer implementation; all closed
    at the end of the test."""
    yield from _journals(store_url, buffer_cls, clock)


@pytest.fixture
def reopen(buffer_cls, clock, durable_url):
    """Journals on one durable store, as successive hub processes (or hub
    replicas) would open it."""
    yield from _journals(durable_url, buffer_cls, clock)


@pytest.fixture
def reopen_sqlite(buffer_cls, clock, sqlite_url):
    """``reopen`` for the tests of the SQLite file itself."""
    yield from _journals(sqlite_url, buffer_cls, clock)


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'journal.db'}"


@pytest.fixture
def journal(make_journal):
    return make_journal()
