"""What a redis:// (or rediss://) store URL may say, checked before anything
connects: every unknown or malformed option is an InvalidArgument naming
the option and the accepted ones, never a TypeError from redis-py."""

from __future__ import annotations

import math
import re
import socket
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from journal.errors import InvalidArgument

__all__ = [
    "MAX_SECONDS", "MIN_SECONDS", "OWN_OPTIONS", "REDIS_PY_OPTIONS", "TLS_OPTIONS",
    "RedisSettings", "default_replica", "parse_url", "redact",
]

NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

#: Seconds bounds of ``timeout``, ``lease``, ``poll`` and ``wait_timeout``.
MIN_SECONDS, MAX_SECONDS = 0.001, 86400.0
#: The most replicas ``wait_replicas`` may ask for (Redis has no limit; a
#: larger number is a typo, and would make every write time out).
MAX_WAIT_REPLICAS = 64

#: Our own URL options.
OWN_OPTIONS = ("prefix", "replica", "timeout", "lease", "poll", "cluster",
               "wait_replicas", "wait_timeout")
#: redis-py connection options a URL may carry (each checked to build a
#: connection in tests/test_redis_url.py); the ``ssl_*`` ones need rediss://.
TLS_OPTIONS = frozenset({
    "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile",
    "ssl_check_hostname", "ssl_password",
})
REDIS_PY_OPTIONS = frozenset({"client_name", "health_check_interval", "socket_keepalive"}) | TLS_OPTIONS
#: ``cluster=``: ``auto`` asks the server (INFO cluster) as the store opens.
CLUSTER_CHOICES = ("auto", "yes", "no")


class RedisSettings(NamedTuple):
    prefix: str
    replica: str
    lease: float
    timeout: float
    poll: float
    cluster: str
    #: ``WAIT`` this many replicas after every durable change (0: do not).
    wait_replicas: int
    wait_timeout: float
    #: The URL handed to redis-py: our own options taken out.
    server_url: str
    host: str
    port: int
    db: int
    tls: bool

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def default_replica() -> str:
    """The replica id of a hub that names none: its host name, so that a hub
    restarted on the same host takes back its own tasks.  Two hubs on one
    host need ``?replica=`` each (the second live one is refused)."""
    name = re.sub(r"[^A-Za-z0-9_.:-]", "-", socket.gethostname())[:64]
    return name or "hub"


def _seconds(options: dict[str, list[str]], name: str, default: float) -> float:
    values = options.pop(name, None)
    if values is None:
        return default
    try:
        value = float(values[-1])
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and MIN_SECONDS <= value <= MAX_SECONDS):
        raise InvalidArgument(
            f"{name} in a redis:// store URL is seconds > 0, finite, from {MIN_SECONDS:g} "
            f"to {MAX_SECONDS:g}; got {values[-1]!r}"
        )
    return value


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        return url


def _accepted() -> str:
    return f"{', '.join(OWN_OPTIONS)}, and of redis-py's: {', '.join(sorted(REDIS_PY_OPTIONS))}"


def parse_url(url: str) -> RedisSettings:
    shape = f"a Redis store URL looks like redis://host:6379/0?prefix=taskjournal, got {redact(url)!r}"
    try:
        parts = urlsplit(url)
        port = parts.port
        hostname = parts.hostname
    except ValueError as exc:  # a port out of range or not a number
        raise InvalidArgument(f"{shape}: {exc}") from None
    if parts.scheme not in ("redis", "rediss") or not hostname:
        raise InvalidArgument(shape)
    if port == 0:
        raise InvalidArgument(f"{shape}: port 0 is no port")
    if parts.fragment:
        raise InvalidArgument(f"{shape}: a '#' fragment has no meaning here")
    path = re.fullmatch(r"/?(\d{1,9})?", parts.path)
    if not path:
        raise InvalidArgument(f"{shape}: the path is the database number (/0), got {parts.path!r}")
    try:
        options = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise InvalidArgument(
            f"the options of {redact(url)!r} are not name=value pairs joined by '&'; "
            f"accepted: {_accepted()}"
        ) from None
    prefix = options.pop("prefix", ["taskjournal"])[-1]
    if not NAME.match(prefix):
        raise InvalidArgument(
            f"prefix {prefix!r} in {redact(url)!r}: use 1-64 letters, digits and _ . : -"
        )
    replica = options.pop("replica", [default_replica()])[-1]
    if not NAME.match(replica):
        raise InvalidArgument(
            f"replica {replica!r} in {redact(url)!r}: use 1-64 letters, digits and _ . : -"
        )
    cluster = options.pop("cluster", ["auto"])[-1]
    if cluster not in CLUSTER_CHOICES:
        raise InvalidArgument(
            f"cluster in a redis:// store URL is one of {', '.join(CLUSTER_CHOICES)}; got {cluster!r}"
        )
    wait_text = options.pop("wait_replicas", ["0"])[-1]
    if not re.fullmatch(r"\d{1,3}", wait_text) or int(wait_text) > MAX_WAIT_REPLICAS:
        raise InvalidArgument(
            f"wait_replicas in a redis:// store URL is a number of replicas from 0 to "
            f"{MAX_WAIT_REPLICAS}; got {wait_text!r}"
        )
    lease = _seconds(options, "lease", 10.0)
    timeout = _seconds(options, "timeout", 10.0)
    poll = _seconds(options, "poll", 1.0)
    wait_timeout = _seconds(options, "wait_timeout", 1.0)
    db = int(path.group(1) or 0)
    if cluster == "yes" and db != 0:
        raise InvalidArgument(f"{redact(url)!r}: a Redis Cluster has database 0 only")
    # What is left must be one of redis-py's options we let through.
    for name in options:
        if name not in REDIS_PY_OPTIONS:
            raise InvalidArgument(f"unknown option {name!r} in a redis:// store URL; accepted: {_accepted()}")
        if name in TLS_OPTIONS and parts.scheme != "rediss":
            raise InvalidArgument(f"option {name!r} is for TLS: use a rediss:// store URL")
    return RedisSettings(
        prefix=prefix, replica=replica, lease=lease, timeout=timeout, poll=poll, cluster=cluster,
        wait_replicas=int(wait_text), wait_timeout=wait_timeout,
        server_url=urlunsplit(parts._replace(query=urlencode(options, doseq=True))),
        host=hostname, port=port or 6379, db=db, tls=parts.scheme == "rediss",
    )


def client_options(settings: RedisSettings) -> dict[str, Any]:
    """The keywords redis-py's client is made with, besides the URL."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return {
        "socket_timeout": min(settings.timeout, 5.0),
        "socket_connect_timeout": min(settings.timeout, 5.0),
        # Retries are ours (RedisStore._call), bounded by ``timeout``;
        # redis-py's own would sleep with backoff inside each attempt.
        "retry": Retry(NoBackoff(), 0),
    }
