"""TLS: AMQPS on a second listener, client certificates with EXTERNAL auth, HTTPS API.
A throwaway CA is generated with the ``cryptography`` package."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import httpx
import pika
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import BrokerProcess, free_port

pytestmark = pytest.mark.extension


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key, issuer_name: x509.Name | None = None, issuer_key=None,
          ca: bool = False, server: bool = False) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _cert("smartbroker test CA", ca_key, ca=True)
    _write(d / "ca", ca, ca_key)
    server_key = _key()
    _write(d / "server", _cert("localhost", server_key, ca.subject, ca_key, server=True), server_key)
    client_key = _key()
    _write(d / "client", _cert("guest", client_key, ca.subject, ca_key), client_key)
    return d


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Path):
    port = free_port()
    proc = BrokerProcess(data_dir=tmp_path / "data", extra_args=[
        "--tls-port", str(port), "--tls-cert", str(pki / "server.crt"),
        "--tls-key", str(pki / "server.key"), "--tls-ca", str(pki / "ca.crt")],
        env={"SMARTBROKER_TLS_VERIFY_PEER": "true"}).start()
    proc.tls_port = port
    try:
        yield proc
    finally:
        proc.stop()


def _client_context(pki: Path, with_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if with_cert:
        ctx.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    return ctx


def test_plain_login_over_tls(tls_broker, pki: Path) -> None:
    params = pika.ConnectionParameters(
        "localhost", tls_broker.tls_port, credentials=pika.PlainCredentials("guest", "guest"),
        ssl_options=pika.SSLOptions(_client_context(pki, with_cert=False), "localhost"))
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"encrypted")
    assert ch.basic_get(q, auto_ack=True)[2] == b"encrypted"
    conn.close()


def test_external_auth_with_a_client_certificate(tls_broker, pki: Path) -> None:
    params = pika.ConnectionParameters(
        "localhost", tls_broker.tls_port, credentials=pika.credentials.ExternalCredentials(),
        ssl_options=pika.SSLOptions(_client_context(pki, with_cert=True), "localhost"))
    conn = pika.BlockingConnection(params)  # CN=guest maps to the user guest
    assert conn.channel().queue_declare("", exclusive=True).method.queue
    conn.close()


def test_external_needs_a_certificate(tls_broker, pki: Path) -> None:
    params = pika.ConnectionParameters(
        "localhost", tls_broker.tls_port, credentials=pika.credentials.ExternalCredentials(),
        ssl_options=pika.SSLOptions(_client_context(pki, with_cert=False), "localhost"))
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(params)


def test_plain_listener_still_works_and_api_is_https(tls_broker, pki: Path) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(tls_broker.url))
    conn.close()
    response = httpx.get(f"https://localhost:{tls_broker.management_port}/api/overview",
                         auth=("guest", "guest"), verify=_client_context(pki, with_cert=False))
    assert response.status_code == 200
