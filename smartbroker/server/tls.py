"""TLS for the AMQP listener and the management API, and EXTERNAL authentication."""

from __future__ import annotations

import ssl
from typing import Any

from smartbroker.config import Config


def server_context(config: Config) -> ssl.SSLContext | None:
    """The listeners' TLS context, or None when no certificate is configured."""
    if config.tls_cert is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(config.tls_cert), str(config.tls_key) if config.tls_key else None)
    if config.tls_ca is not None:
        ctx.load_verify_locations(cafile=str(config.tls_ca))
    if config.tls_fail_if_no_peer_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif config.tls_verify_peer:
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def peer_common_name(transport: Any) -> str | None:
    """The CN of a verified client certificate (the EXTERNAL mechanism's user name)."""
    if transport is None:
        return None
    cert = transport.get_extra_info("peercert")
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None
