"""kafka/sasl.py and kafka/scram.py without a socket: PLAIN and SCRAM logins against the
broker's users (scramp as the client), Kafka's error codes for refusals and states, and
the SCRAM credentials the user store derives from a password."""

from __future__ import annotations

import base64
import hashlib
import hmac
from types import SimpleNamespace
from typing import Any

import pytest
import scramp

from smartbroker.auth import User, hash_password
from smartbroker.broker.core import Broker
from smartbroker.broker.permissions import Permission
from smartbroker.config import Config
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.handlers import Session
from smartbroker.kafka.sasl import SaslFailure, SaslHandlers

PEER = "127.0.0.1:40000"


@pytest.fixture
def broker() -> Broker:
    broker = Broker(Config())
    broker.users.add("alice", "pw", [])
    broker.permissions.set(Permission("alice", "/"))
    broker.users.add("nobody", "pw", [])  # no permissions in "/"
    broker.users.save(User("hashed", hash_password("pw"), []))
    broker.permissions.set(Permission("hashed", "/"))
    return broker


def handshake(sasl: SaslHandlers, session: Session, mechanism: str, version: int = 1) -> Any:
    return sasl.handshake(SimpleNamespace(api_version=version,
                                          body=SimpleNamespace(mechanism=mechanism)), session)


def authenticate(sasl: SaslHandlers, session: Session, token: bytes) -> Any:
    return sasl.authenticate(SimpleNamespace(api_version=2,
                                             body=SimpleNamespace(auth_bytes=token)), session)


def login(broker: Broker, mechanism: str, user: str, password: str,
          peer: str = PEER) -> tuple[Session, Any]:
    """The whole exchange; (session, the last SaslAuthenticate response)."""
    sasl = SaslHandlers(broker, "/")
    session = Session(peer, "127.0.0.1")
    assert handshake(sasl, session, mechanism).error_code == ErrorCode.NONE
    if mechanism == "PLAIN":
        return session, authenticate(sasl, session, f"\0{user}\0{password}".encode())
    client = scramp.ScramClient([mechanism], user, password)
    first = authenticate(sasl, session, client.get_client_first().encode())
    if first.error_code:
        return session, first
    client.set_server_first(first.auth_bytes.decode())
    final = authenticate(sasl, session, client.get_client_final().encode())
    if final.error_code == ErrorCode.NONE:
        client.set_server_final(final.auth_bytes.decode())  # the server proved itself too
    return session, final


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_the_right_password_logs_in(broker: Broker, mechanism: str) -> None:
    session, resp = login(broker, mechanism, "alice", "pw")
    assert resp.error_code == ErrorCode.NONE and resp.session_lifetime_ms == 0
    assert session.user == "alice" and session.sasl.done and not session.closing


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("user", ["alice", "ghost"])
def test_a_wrong_password_or_unknown_user_is_58_and_closes(broker: Broker, mechanism: str,
                                                           user: str) -> None:
    session, resp = login(broker, mechanism, user, "wrong")
    assert resp.error_code == ErrorCode.SASL_AUTHENTICATION_FAILED
    assert resp.error_message.startswith("Authentication failed")
    assert session.user is None and session.closing


def test_a_user_without_scram_credentials_may_use_plain_only(broker: Broker) -> None:
    session, resp = login(broker, "SCRAM-SHA-256", "hashed", "pw")
    assert resp.error_code == ErrorCode.SASL_AUTHENTICATION_FAILED
    assert "has no SCRAM-SHA-256 credentials" in resp.error_message
    assert login(broker, "PLAIN", "hashed", "pw")[0].user == "hashed"


def test_the_kafka_vhost_and_the_loopback_rule_decide_after_the_password(broker: Broker) -> None:
    _, resp = login(broker, "PLAIN", "nobody", "pw")
    assert "has no access to vhost '/'" in resp.error_message
    _, resp = login(broker, "SCRAM-SHA-512", "guest", "guest", peer="10.1.2.3:4000")
    assert "may only connect via localhost" in resp.error_message
    assert login(broker, "PLAIN", "guest", "guest")[0].user == "guest"


def test_plain_with_another_authorization_id_is_refused(broker: Broker) -> None:
    sasl = SaslHandlers(broker, "/")
    session = Session(PEER, "127.0.0.1")
    handshake(sasl, session, "PLAIN")
    resp = authenticate(sasl, session, b"admin\0alice\0pw")
    assert resp.error_code == ErrorCode.SASL_AUTHENTICATION_FAILED
    assert "authorization id" in resp.error_message


def test_states_and_mechanisms_as_kafka(broker: Broker) -> None:
    sasl = SaslHandlers(broker, "/")
    session = Session(PEER, "127.0.0.1")
    resp = handshake(sasl, session, "GSSAPI")
    assert resp.error_code == ErrorCode.UNSUPPORTED_SASL_MECHANISM
    assert resp.mechanisms == ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] and session.closing
    session = Session(PEER, "127.0.0.1")
    assert authenticate(sasl, session, b"\0alice\0pw").error_code == ErrorCode.ILLEGAL_SASL_STATE
    assert session.closing  # SaslAuthenticate before any handshake
    session, _ = login(broker, "PLAIN", "alice", "pw")
    assert handshake(sasl, session, "PLAIN").error_code == ErrorCode.ILLEGAL_SASL_STATE
    assert not session.closing  # after authentication: refused, the connection stays
    resp = authenticate(sasl, session, b"\0alice\0pw")
    assert resp.error_code == ErrorCode.ILLEGAL_SASL_STATE and session.user == "alice"


def test_raw_tokens_after_a_v0_handshake(broker: Broker) -> None:
    sasl = SaslHandlers(broker, "/")
    session = Session(PEER, "127.0.0.1")
    assert handshake(sasl, session, "PLAIN", version=0).error_code == ErrorCode.NONE
    assert session.sasl.raw
    resp = authenticate(sasl, session, b"\0alice\0pw")  # no SaslAuthenticate after v0
    assert resp.error_code == ErrorCode.ILLEGAL_SASL_STATE
    session = Session(PEER, "127.0.0.1")
    handshake(sasl, session, "PLAIN", version=0)
    assert sasl.raw_token(b"\0alice\0pw", session) == b"" and session.user == "alice"
    session = Session(PEER, "127.0.0.1")
    handshake(sasl, session, "PLAIN", version=0)
    with pytest.raises(SaslFailure):
        sasl.raw_token(b"\0alice\0nope", session)


def test_a_client_final_with_the_nonce_twice_passes_as_in_kafka(broker: Broker) -> None:
    """librdkafka 2.0 puts the client nonce twice in its client-final; Kafka checks
    ``endsWith`` and verifies the proof over the message as sent: so do we."""
    sasl = SaslHandlers(broker, "/")
    session = Session(PEER, "127.0.0.1")
    handshake(sasl, session, "SCRAM-SHA-256")
    c_nonce = "abcdefghijklmnopqrstuvwx"
    first_bare = f"n=alice,r={c_nonce}"
    server_first = authenticate(sasl, session, f"n,,{first_bare}".encode()).auth_bytes.decode()
    attrs = dict(part.split("=", 1) for part in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", b"pw", base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    without_proof = f"c=biws,r={c_nonce}{attrs['r']}"  # the quirk: the client nonce again
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(hashlib.sha256(client_key).digest(), auth_message, hashlib.sha256).digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True)))
    resp = authenticate(sasl, session, f"{without_proof},p={proof.decode()}".encode())
    assert resp.error_code == ErrorCode.NONE and session.user == "alice"
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    expected = hmac.new(server_key, auth_message, hashlib.sha256).digest()
    assert resp.auth_bytes == b"v=" + base64.b64encode(expected)


def test_scram_credentials_follow_the_password(broker: Broker) -> None:
    users = broker.users
    alice = users.users["alice"]
    assert set(alice.scram) == {"SCRAM-SHA-256", "SCRAM-SHA-512"}
    assert all(c.iterations == 4096 and len(c.salt) >= 16 for c in alice.scram.values())
    users.save(User("alice", alice.password_hash, ["monitoring"]))  # tags only: kept
    assert users.users["alice"].scram == alice.scram
    users.save(User("alice", hash_password("other"), []))  # a new hash: the old ones go
    assert users.users["alice"].scram == {}
    users.add("alice", "again")
    assert users.users["alice"].scram["SCRAM-SHA-512"] != alice.scram["SCRAM-SHA-512"]
