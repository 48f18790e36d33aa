"""What the Redis client raised, as the journal's errors: whether waiting
could help (an outage, a failover, a slot on the move) and what was written."""

from __future__ import annotations

from journal.errors import JournalError, StoreError, StoreUnavailable

__all__ = ["NotReplicated", "Refusal", "judge", "topology_change"]

try:
    from redis import exceptions as redis_errors
except ImportError:  # pragma: no cover - the optional extra is missing; RedisStore says so
    redis_errors = None  # type: ignore[assignment]

# Replies that mean "not now": retried within ``timeout`` like an outage.
NOT_NOW = ("BUSY", "LOADING", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN")


class Refusal(StoreError):
    """A script's own refusal (DUPLICATE, OWNED), turned into the right
    error by the caller."""


class NotReplicated(StoreUnavailable):
    """``WAIT`` heard from fewer replicas than ``wait_replicas`` in time: the
    change is on the primary and may or may not survive a failover."""


def judge(exc: BaseException, where: str, seconds: float) -> tuple[bool, BaseException]:
    """(worth retrying, the error to raise) for what the client raised."""
    if isinstance(exc, JournalError):
        return False, exc
    text = str(exc)
    if isinstance(exc, (redis_errors.AuthenticationError, redis_errors.AuthorizationError)) or (
        isinstance(exc, redis_errors.ResponseError) and text.startswith(("WRONGPASS", "NOAUTH"))
    ):
        return False, StoreError(
            f"Redis at {where} refused this store's credentials ({text}): nothing was "
            "written; check the user and password in the store URL"
        )
    if isinstance(exc, redis_errors.TimeoutError):
        return True, StoreUnavailable(
            f"Redis at {where} did not answer for {seconds:g} s ({text}); nothing was "
            "confirmed, though the last try may have landed: retry when Redis is back "
            "(a retried registration is recognised)"
        )
    if isinstance(exc, (redis_errors.ConnectionError, OSError)):
        return True, StoreUnavailable(
            f"Redis at {where} did not answer for {seconds:g} s ({text}); nothing was "
            "confirmed: retry when Redis is back"
        )
    if isinstance(exc, redis_errors.ReadOnlyError):
        return True, StoreUnavailable(
            f"Redis at {where} stayed read-only for {seconds:g} s ({text}: a replica, or "
            "a failover under way): nothing was written; retry once a primary answers"
        )
    if isinstance(exc, (redis_errors.AskError, redis_errors.TryAgainError,
                        redis_errors.ClusterError, redis_errors.SlotNotCoveredError)):
        # MOVED and ASK: a slot moved or is moving (the route follows it);
        # TRYAGAIN: a script's keys are half moved; CLUSTERDOWN, uncovered
        # slots: a failover under way.
        return True, StoreUnavailable(
            f"the Redis Cluster at {where} kept redirecting or lacked a primary for "
            f"{seconds:g} s ({type(exc).__name__}: {text}): nothing was written; retry once "
            "the cluster is stable"
        )
    if isinstance(exc, redis_errors.OutOfMemoryError):
        return False, StoreError(
            f"Redis at {where} is out of memory (maxmemory): nothing was written ({text}); "
            "free memory or raise maxmemory, then retry"
        )
    if isinstance(exc, redis_errors.NoPermissionError):
        # Refused inside a script, what the script wrote before stays
        # (Redis does not roll scripts back); refused outright, nothing ran.
        landed = ("the part of the script before that command may have been written"
                  if "script:" in text else "nothing was written")
        return False, StoreError(
            f"Redis at {where} refused a command for lack of permission ({text}): {landed}; "
            "the store's user needs EVALSHA, SCRIPT, WAIT, the hash, zset and string commands "
            "and (S)PUBLISH/(S)SUBSCRIBE on the namespace's keys"
        )
    if isinstance(exc, redis_errors.ResponseError):
        if text.startswith(("DUPLICATE ", "OWNED ")):
            return False, Refusal(text)
        if text.startswith(NOT_NOW):
            return True, StoreUnavailable(
                f"Redis at {where} was not ready for {seconds:g} s ({text}): nothing was "
                "written; retry later"
            )
        return False, StoreError(f"Redis at {where} refused the command: {text}")
    if isinstance(exc, redis_errors.RedisError):
        return False, StoreError(
            f"the Redis client failed talking to {where} ({type(exc).__name__}: {text}); "
            "the change may not have been made: read the task back before retrying"
        )
    return False, StoreError(
        f"the Redis client failed unexpectedly talking to {where} "
        f"({type(exc).__name__}: {text}); the change may not have been made"
    )


def topology_change(exc: BaseException) -> bool:
    """A cluster moving slots or failing over (retried, not a fault)."""
    return isinstance(exc, (redis_errors.AskError, redis_errors.TryAgainError,
                            redis_errors.ClusterError, redis_errors.SlotNotCoveredError))
