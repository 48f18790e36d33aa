"""redis:// store URLs: every option is checked before anything connects
(issue 13, points 4 and 12)."""

from __future__ import annotations

import pytest

from journal import InvalidArgument
from journal.store._redis_url import REDIS_PY_OPTIONS, client_options, default_replica, parse_url
from journal.store.redis import RedisStore

pytestmark = pytest.mark.redis

BASE = "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize("name", ["timeout", "lease", "poll", "wait_timeout"])
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "-1", "0", "1e-9", "1e308", "100000", "x", ""])
def test_seconds_must_be_finite_and_bounded(name, value):
    with pytest.raises(InvalidArgument, match=rf"{name} in a redis:// store URL is seconds.*0\.001.*86400"):
        parse_url(f"{BASE}?{name}={value}")


@pytest.mark.parametrize("name", ["timeout", "lease", "poll", "wait_timeout"])
def test_seconds_at_the_bounds_are_accepted(name):
    assert getattr(parse_url(f"{BASE}?{name}=0.001"), name) == 0.001
    assert getattr(parse_url(f"{BASE}?{name}=86400"), name) == 86400


def test_an_unknown_option_is_named_with_the_accepted_ones():
    with pytest.raises(InvalidArgument, match=r"'bogus'.*timeout.*health_check_interval") as caught:
        RedisStore(f"{BASE}?bogus=1")
    assert "TypeError" not in str(caught.value)


def test_tls_options_need_rediss():
    with pytest.raises(InvalidArgument, match="ssl_cert_reqs.*rediss://"):
        parse_url(f"{BASE}?ssl_cert_reqs=none")


@pytest.mark.parametrize("name", sorted(REDIS_PY_OPTIONS))
def test_every_accepted_redis_py_option_makes_a_connection(name):
    """redis-py takes each allowed option (it builds a connection from it
    without a TypeError); no server is needed for that."""
    import redis

    value = {"health_check_interval": "5", "socket_keepalive": "true", "client_name": "hub",
             "ssl_cert_reqs": "none", "ssl_check_hostname": "false"}.get(name, "/nonexistent")
    scheme = "rediss" if name.startswith("ssl_") else "redis"
    settings = parse_url(f"{scheme}://127.0.0.1:6379/0?{name}={value}")
    client = redis.Redis.from_url(settings.server_url, **client_options(settings))
    try:
        client.connection_pool.make_connection()
    finally:
        client.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:99999/0",
        "redis://127.0.0.1:x/0",
        "redis://127.0.0.1:0/0",
        "redis://127.0.0.1:6379/abc",
        "redis://127.0.0.1:6379/0/1",
        "redis://127.0.0.1:6379/-1",
        "redis://127.0.0.1:6379/0?health_check_interval=soon",
        "redis://127.0.0.1:6379/0#fragment",
    ],
)
def test_malformed_urls_are_invalid_arguments(url):
    with pytest.raises(InvalidArgument):
        RedisStore(url)


def test_timeout_inf_used_to_retry_forever():
    with pytest.raises(InvalidArgument, match="timeout"):
        RedisStore("redis://127.0.0.1:1/0?timeout=inf")


@pytest.mark.parametrize("value", ["-1", "x", "", "65", "1.5", "1e3"])
def test_wait_replicas_is_a_small_count(value):
    with pytest.raises(InvalidArgument, match=r"wait_replicas in a redis:// store URL is a number .* 0 to 64"):
        parse_url(f"{BASE}?wait_replicas={value}")


def test_wait_replicas_and_its_timeout_are_read():
    settings = parse_url(f"{BASE}?wait_replicas=2&wait_timeout=0.25")
    assert (settings.wait_replicas, settings.wait_timeout) == (2, 0.25)
    assert parse_url(BASE).wait_replicas == 0  # off unless asked for


@pytest.mark.parametrize("value", ["maybe", "", "1", "true"])
def test_cluster_is_auto_yes_or_no(value):
    with pytest.raises(InvalidArgument, match="cluster in a redis:// store URL is one of auto, yes, no"):
        parse_url(f"{BASE}?cluster={value}")


def test_a_cluster_has_database_0_only():
    with pytest.raises(InvalidArgument, match="database 0 only"):
        parse_url("redis://127.0.0.1:6379/1?cluster=yes")


@pytest.mark.parametrize("query", ["timeout", "=1", "prefix=a&&timeout=1", "a;b"])
def test_a_malformed_query_names_the_accepted_options(query):
    with pytest.raises(InvalidArgument, match=r"accepted: prefix, replica.*wait_replicas"):
        parse_url(f"{BASE}?{query}")


def test_the_unknown_option_message_names_every_option_of_ours():
    with pytest.raises(InvalidArgument) as caught:
        parse_url(f"{BASE}?wait_replica=1")
    message = str(caught.value)
    assert "'wait_replica'" in message
    for name in ("prefix", "replica", "timeout", "lease", "poll", "cluster", "wait_replicas",
                 "wait_timeout", "client_name"):
        assert name in message


def test_the_default_replica_id_is_a_valid_name_from_the_host_name(monkeypatch):
    import socket

    monkeypatch.setattr(socket, "gethostname", lambda: "build box #7.example.org")
    assert default_replica() == "build-box--7.example.org"
    assert parse_url(BASE).replica == "build-box--7.example.org"
    monkeypatch.setattr(socket, "gethostname", lambda: "")
    assert default_replica() == "hub"
