"""Redis clients from `Settings`: standalone or Cluster, TLS, ACL user, bounded timeouts."""

from __future__ import annotations

from typing import Any

import redis
from redis.cluster import RedisCluster

from memberpulse.streams.settings import Settings

RedisClient = redis.Redis | RedisCluster


def make_redis(settings: Settings) -> RedisClient:
    """A client for `settings.redis_url` (`rediss://` for TLS; Cluster when configured)."""
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout_s,
        "socket_connect_timeout": settings.redis_timeout_s,
    }
    if settings.redis_username is not None:
        options["username"] = settings.redis_username
    if settings.redis_password is not None:
        options["password"] = settings.redis_password.get_secret_value()
    tls_files = {
        "ssl_ca_certs": settings.redis_ssl_cafile,
        "ssl_certfile": settings.redis_ssl_certfile,
        "ssl_keyfile": settings.redis_ssl_keyfile,
    }
    options |= {key: str(path) for key, path in tls_files.items() if path is not None}
    url = settings.redis_url.get_secret_value()
    if settings.redis_cluster:
        return RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)
