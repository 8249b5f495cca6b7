"""Validating the options of the Redis storages' own clients, before redis is touched.

:meth:`RedisStorage.from_url <ratekeeper.RedisStorage.from_url>` and its asyncio twin
build their client from a URL: this module checks the URL's scheme and the timeouts,
refuses retry options (a decision that timed out may have run, so it is never sent
again), and maps the cluster schemes onto the ones redis-py knows. It imports nothing
from redis.
"""

from __future__ import annotations

from typing import Any

from ratekeeper.exceptions import ConfigError

__all__ = ["client_options"]

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
_RETRY_OPTIONS = ("retry", "retry_on_timeout", "retry_on_error", "cluster_error_retry_attempts")


def client_options(
    url: str,
    cluster: bool | None,
    socket_timeout: float,
    socket_connect_timeout: float,
    options: dict[str, Any],
) -> tuple[str, bool, dict[str, Any]]:
    """The URL redis-py understands, whether it names a cluster, and the client options."""
    for name in _RETRY_OPTIONS:
        if name in options:
            raise ConfigError(
                f"{name}= is not accepted: a decision is never retried, because a script "
                "that timed out may have run"
            )
    for name, value in (
        ("socket_timeout", socket_timeout),
        ("socket_connect_timeout", socket_connect_timeout),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 3600:
            raise ConfigError(f"{name} must be a number of seconds > 0, got {value!r}")
    if not isinstance(url, str):
        raise ConfigError(f"a Redis URL must be a string, got {url!r}")
    scheme, sep, rest = url.partition("://")
    if scheme.lower() not in _SCHEMES or not sep:
        # Only the scheme is shown: the rest of a URL may hold a password.
        raise ConfigError(
            f"unsupported Redis URL scheme {scheme + sep if sep else '(none)'!r}: expected "
            f"one of {', '.join(s + '://' for s in _SCHEMES)}"
        )
    plain = _CLUSTER_SCHEMES.get(scheme.lower())
    if plain is not None:
        if cluster is False:
            raise ConfigError(f"cluster=False contradicts the URL scheme {scheme}://")
        url, cluster = plain + sep + rest, True
    options = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        **options,
    }
    return url, bool(cluster), options
