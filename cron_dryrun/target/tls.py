"""TLS as operators have it: the trust store the cron client verifies with, and named failures.

Verification is never turned off. The client trusts the system store (which honours
SSL_CERT_FILE / SSL_CERT_DIR), certifi's bundle, and the operator's private CA bundle
(``--ca-bundle`` / ``CRON_CA_BUNDLE``, or ``SSL_CERT_FILE`` read explicitly). A
certificate that does not verify is named for what it is (unknown CA, wrong host name,
expired), with the fix. ``certificate_failure`` is pure; ``client_context`` reads files.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cron_dryrun.errors import CronDryrunError

CA_BUNDLE_HINT = (
    "if the target uses a private CA, give its bundle with --ca-bundle=PATH / CRON_CA_BUNDLE "
    "(or SSL_CERT_FILE); verification is never turned off"
)

# OpenSSL X509_V_ERR_* codes (x509_vfy.h)
_EXPIRED = {10}
_NOT_YET_VALID = {9}
_UNKNOWN_CA = {2, 18, 19, 20, 21}
_HOST_MISMATCH = {62, 64}


class CaBundleError(CronDryrunError, ValueError):
    """The CA bundle given cannot be loaded; the message names the file and the option."""


def client_context(
    ca_bundle: Path | None = None, ssl_cert_file: Path | None = None
) -> ssl.SSLContext:
    """A verifying context: system store, certifi, then SSL_CERT_FILE and the given bundle."""
    context = ssl.create_default_context()  # CERT_REQUIRED, check_hostname, system store
    try:
        import certifi

        context.load_verify_locations(certifi.where())
    except ImportError:  # pragma: no cover - certifi comes with httpx
        pass
    for path, where in (
        (ssl_cert_file, "SSL_CERT_FILE"),
        (ca_bundle, "--ca-bundle / CRON_CA_BUNDLE"),
    ):
        if path is None:
            continue
        try:
            context.load_verify_locations(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            raise CaBundleError(
                f"{where}: cannot load the CA bundle {path} ({exc}); give a PEM file of CA certificates"
            ) from None
    return context


def _verification_error(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error somewhere in an exception's cause/context chain (httpx wraps it twice)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return current
        current = current.__cause__ or current.__context__
    return None


def certificate_failure(exc: BaseException, host: str) -> str | None:
    """The named TLS failure behind a transport error, with its fix; None when TLS is not why."""
    error = _verification_error(exc)
    if error is None:
        return None
    if not isinstance(error, ssl.SSLCertVerificationError):
        return (
            f"the TLS handshake with {host} failed ({error.reason or error}): check that the URL's "
            "scheme and port serve https"
        )
    code = error.verify_code
    detail = f"verify error {code}: {error.verify_message}"
    if code in _EXPIRED:
        return (
            f"the TLS certificate of {host} has expired ({detail}): the server must renew it; "
            "verification is never turned off"
        )
    if code in _NOT_YET_VALID:
        return (
            f"the TLS certificate of {host} is not valid yet ({detail}): check the server's "
            "certificate dates and this machine's clock"
        )
    if code in _HOST_MISMATCH:
        return (
            f"the TLS certificate does not name the host {host} ({detail}): use the host name "
            "the certificate was issued for in CRON_URL, or fix the server's certificate"
        )
    if code in _UNKNOWN_CA:
        return (
            f"the TLS certificate of {host} is signed by a CA this machine does not trust "
            f"({detail}): {CA_BUNDLE_HINT}"
        )
    return f"the TLS certificate of {host} did not verify ({detail}): {CA_BUNDLE_HINT}"
