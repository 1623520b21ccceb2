"""Redis clients from the Redis section: standalone or Cluster, TLS, ACL user, timeouts."""

from __future__ import annotations

from typing import Any

import redis
from redis.cluster import RedisCluster

from memberpulse.streams.settings import RedisSettings

RedisClient = redis.Redis | RedisCluster


def make_redis(config: RedisSettings) -> RedisClient:
    """A client for `config.url` (`rediss://` for TLS; Cluster when configured)."""
    options: dict[str, Any] = {
        "socket_timeout": config.timeout_s,
        "socket_connect_timeout": config.timeout_s,
    }
    if config.username is not None:
        options["username"] = config.username
    if config.password is not None:
        options["password"] = config.password.get_secret_value()
    tls_files = {
        "ssl_ca_certs": config.ssl_cafile,
        "ssl_certfile": config.ssl_certfile,
        "ssl_keyfile": config.ssl_keyfile,
    }
    options |= {key: str(path) for key, path in tls_files.items() if path is not None}
    url = config.url.get_secret_value()
    if config.cluster:
        return RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)
