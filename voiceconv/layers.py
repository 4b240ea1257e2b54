"""What can be wrong with a channel layer's configuration (as opposed to a passing failure).

channels_redis waits for messages with a blocking pop of ``brpop_timeout`` seconds (5). The
``redis`` client gives up on a socket read after ``socket_timeout`` seconds, which defaults to
5 in today's client: equal timeouts make every idle receive fail with ``TimeoutError``, every
few seconds, for as long as a call lasts. The client's timeout must be the longer one::

    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:6379/0", "socket_timeout": 10}]}}}
"""

from __future__ import annotations

from typing import Any

__all__ = ["redis_timeout_problem"]


def redis_timeout_problem(layer: Any) -> str | None:
    """Why ``layer`` (a channels_redis layer) times out on every idle receive, or ``None``."""
    blocking = getattr(layer, "brpop_timeout", None)
    hosts = getattr(layer, "hosts", None)
    if not isinstance(blocking, int | float) or not hosts:
        return None
    try:
        # Imported here: redis comes with channels_redis, which a project on another layer may
        # lack.
        from redis.asyncio import ConnectionPool
    except ImportError:
        return None
    for host in hosts:
        if not isinstance(host, dict) or "master_name" in host:
            continue
        options = dict(host)
        try:
            if "address" in options:
                pool = ConnectionPool.from_url(options.pop("address"), **options)
            else:
                pool = ConnectionPool(**options)
            # A connection object, not connected: it holds the timeout the client will use.
            timeout = pool.connection_class(**pool.connection_kwargs).socket_timeout
        except (TypeError, ValueError, AttributeError):
            continue
        if timeout is not None and timeout <= blocking:
            return (
                f"the Redis client's socket_timeout ({timeout:g} s) is not longer than the "
                f"channel layer's blocking receive ({blocking:g} s), so every idle receive "
                "times out; give the host a longer one: CONFIG = {\"hosts\": [{\"address\": "
                f"...,\"socket_timeout\": {blocking * 2:g}}}]}}"
            )
    return None
