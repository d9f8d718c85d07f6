"""TLS as operators have it: a loopback https stand-in whose certificates come from trustme.

A trusted CA passes (given as --ca-bundle / CRON_CA_BUNDLE or SSL_CERT_FILE); an unknown
CA, a wrong host name and an expired certificate each fail with their own message and fix.
Verification is never turned off.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from cron_dryrun.rules.checks import exchange_problem
from cron_dryrun.standin._asgi import Receive, Scope, Send, respond_json
from cron_dryrun.standin.server import serving
from cron_dryrun.target.client import CronClient
from cron_dryrun.target.tls import CaBundleError, client_context

PATH = "/api/cron/daily-usage"


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    await respond_json(send, 200, {"success": True})


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _serve(cert: trustme.LeafCert, tmp: Path) -> Iterator[str]:
    pem = tmp / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    with serving(app, name="tls", ssl_certfile=pem) as server:
        yield server.url


@pytest.fixture
def good_server(ca: trustme.CA, tmp_path: Path) -> Iterator[str]:
    yield from _serve(ca.issue_cert("127.0.0.1", "localhost"), tmp_path)


def ca_file(ca: trustme.CA, tmp: Path) -> Path:
    path = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def trigger(url: str, **tls: Path | None) -> tuple[int | None, str | None]:
    client = CronClient(url=url + PATH, secret="s", timeout_s=5, verify=client_context(**tls))
    exchange = client.trigger()
    return exchange.final.status, exchange_problem(exchange)


def test_the_server_url_is_https(good_server: str) -> None:
    assert good_server.startswith("https://127.0.0.1:")


def test_a_trusted_private_ca_passes_via_ca_bundle(
    good_server: str, ca: trustme.CA, tmp_path: Path
) -> None:
    assert trigger(good_server, ca_bundle=ca_file(ca, tmp_path)) == (200, None)


def test_a_trusted_private_ca_passes_via_ssl_cert_file(
    good_server: str, ca: trustme.CA, tmp_path: Path
) -> None:
    assert trigger(good_server, ssl_cert_file=ca_file(ca, tmp_path)) == (200, None)


def test_an_unknown_ca_is_named_with_the_fix(good_server: str) -> None:
    status, problem = trigger(good_server)
    assert status is None and problem is not None
    host = "127.0.0.1"
    assert (
        f"the TLS certificate of {host} is signed by a CA this machine does not trust (verify error 20: unable to get local issuer certificate): if the target uses a private CA, give its bundle with --ca-bundle=PATH / CRON_CA_BUNDLE (or SSL_CERT_FILE); verification is never turned off"
        in problem
    )


def test_another_private_ca_is_not_trusted_either(good_server: str, tmp_path: Path) -> None:
    status, problem = trigger(good_server, ca_bundle=ca_file(trustme.CA(), tmp_path))
    assert status is None and "is signed by a CA this machine does not trust" in (problem or "")


def test_a_wrong_host_name_is_named(ca: trustme.CA, tmp_path: Path) -> None:
    for url in _serve(ca.issue_cert("cron.example.internal"), tmp_path):
        status, problem = trigger(url, ca_bundle=ca_file(ca, tmp_path))
    assert status is None
    assert (
        "the TLS certificate does not name the host 127.0.0.1 (verify error 64: IP address mismatch"
        in (problem or "")
    )
    assert (
        "use the host name the certificate was issued for in CRON_URL, or fix the server's certificate"
        in (problem or "")
    )


def test_an_expired_certificate_is_named(ca: trustme.CA, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    expired = ca.issue_cert(
        "127.0.0.1", not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
    )
    for url in _serve(expired, tmp_path):
        status, problem = trigger(url, ca_bundle=ca_file(ca, tmp_path))
    assert status is None
    assert (
        "the TLS certificate of 127.0.0.1 has expired (verify error 10: certificate has expired): "
        "the server must renew it; verification is never turned off"
    ) in (problem or "")


def test_http_spoken_to_an_https_port_is_named_as_a_handshake_failure(
    good_server: str, tmp_path: Path
) -> None:
    status, problem = trigger(good_server.replace("https://", "http://"))
    assert status is None and problem is not None  # the server refuses plain http: no TLS named
    assert "TLS certificate" not in problem


def test_an_unreadable_ca_bundle_names_the_option(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-bundle.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(CaBundleError) as excinfo:
        client_context(ca_bundle=bad)
    assert str(excinfo.value).startswith(
        f"--ca-bundle / CRON_CA_BUNDLE: cannot load the CA bundle {bad} ("
    )
