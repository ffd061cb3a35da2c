"""SaslHandshake (v0-1) and SaslAuthenticate (v0-2): PLAIN and SCRAM-SHA-256/512 against
the broker's own users, as Kafka's SaslServerAuthenticator does it.

A connection's ``Session.sasl`` (a ``SaslExchange``) walks Kafka's states: handshake, then
the mechanism's tokens, then done. Tokens come in SaslAuthenticate requests after a v1
handshake, or raw (4-byte size, no request header) after a v0 one (``raw_token``). Kafka's
answers: an unknown mechanism is UNSUPPORTED_SASL_MECHANISM (33), a request out of order
ILLEGAL_SASL_STATE (34), and a failed login SASL_AUTHENTICATION_FAILED (58) with a message;
each of these closes the connection (``Session.closing``), except a second handshake on a
connection already authenticated, which is only refused, as Kafka's KafkaApis does.

A user passes when its password (PLAIN) or SCRAM proof is right, it may connect from the
client's address (RabbitMQ's loopback rule, as over AMQP), and it has access to the Kafka
vhost. SCRAM (``scram.py``) needs credentials derived when the password was set
(``auth.ScramCredential``); a user whose password was only ever given hashed can use PLAIN
only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from smartbroker.auth import SCRAM_MECHANISMS, ScramCredential, check_password
from smartbroker.broker.access import may_connect_from
from smartbroker.kafka import codec
from smartbroker.kafka.authz import vhost_allowed
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.scram import ScramExchange, ScramFailure

log = logging.getLogger("smartbroker.kafka")

SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
HANDSHAKE_VERSIONS = (0, 1)
AUTHENTICATE_VERSIONS = (0, 2)
MECHANISMS = ("PLAIN", *SCRAM_MECHANISMS)
INVALID = "Authentication failed: Invalid username or password"  # Kafka's PLAIN text


class SaslFailure(Exception):
    """The login is refused: SASL_AUTHENTICATION_FAILED with this message, then close."""


@dataclass
class SaslExchange:
    """One connection's SASL state (Kafka's SaslServerAuthenticator states)."""

    mechanism: str | None = None  # chosen at the handshake
    raw: bool = False  # v0 handshake: tokens come without SaslAuthenticate framing
    done: bool = False  # authenticated
    scram: ScramExchange | None = None  # while a SCRAM exchange runs


class SaslHandlers:
    """The two SASL APIs of one listener, checking logins against ``broker``'s users."""

    def __init__(self, broker: Any, vhost: str) -> None:
        self.broker = broker
        self.vhost = vhost

    # -- SaslHandshake ---------------------------------------------------------------------

    def handshake(self, request: Any, session: Any) -> Any:
        cls = codec.response_class(SASL_HANDSHAKE)
        mechanism = request.body.mechanism
        exchange = session.sasl
        if exchange is not None:  # a second handshake
            # after authentication Kafka's KafkaApis only refuses it; before, it closes
            session.closing = session.closing or not exchange.done
            return cls(version=request.api_version, error_code=ErrorCode.ILLEGAL_SASL_STATE,
                       mechanisms=list(MECHANISMS))
        if mechanism not in MECHANISMS:
            log.info("Kafka client %s asked for SASL mechanism %r: not enabled", session.peer,
                     mechanism)
            session.closing = True
            return cls(version=request.api_version,
                       error_code=ErrorCode.UNSUPPORTED_SASL_MECHANISM, mechanisms=list(MECHANISMS))
        session.sasl = SaslExchange(mechanism, raw=request.api_version == 0)
        log.debug("Kafka client %s: SaslHandshake v%d, %s%s", session.peer, request.api_version,
                  mechanism, " (raw tokens follow)" if session.sasl.raw else "")
        return cls(version=request.api_version, error_code=ErrorCode.NONE,
                   mechanisms=list(MECHANISMS))

    # -- SaslAuthenticate ------------------------------------------------------------------

    def authenticate(self, request: Any, session: Any) -> Any:
        cls = codec.response_class(SASL_AUTHENTICATE)
        exchange = session.sasl

        def answer(code: ErrorCode, message: str | None, data: bytes = b"") -> Any:
            return cls(version=request.api_version, error_code=code, error_message=message,
                       auth_bytes=data, session_lifetime_ms=0)

        if exchange is None or exchange.raw:
            session.closing = True
            return answer(ErrorCode.ILLEGAL_SASL_STATE,
                          "SaslAuthenticate request received before SaslHandshake v1")
        if exchange.done:
            return answer(ErrorCode.ILLEGAL_SASL_STATE,
                          "SaslAuthenticate request received after successful authentication")
        try:
            reply = self.step(exchange, bytes(request.body.auth_bytes or b""), session)
        except SaslFailure as exc:
            log.warning("Kafka SASL login refused for %s (%s): %s", session.peer,
                        exchange.mechanism, exc)
            session.closing = True
            return answer(ErrorCode.SASL_AUTHENTICATION_FAILED, str(exc))
        return answer(ErrorCode.NONE, None, reply)

    def raw_token(self, token: bytes, session: Any) -> bytes:
        """A token after a v0 handshake; the reply token (sent with a size, no header).
        SaslFailure: close without an answer, as Kafka does for v0 clients."""
        exchange = session.sasl
        if exchange is None or not exchange.raw or exchange.done:
            raise SaslFailure("unexpected SASL token")
        return self.step(exchange, token, session)

    # -- the mechanisms --------------------------------------------------------------------

    def step(self, exchange: SaslExchange, token: bytes, session: Any) -> bytes:
        """Evaluate one client token; the server's reply. Sets ``session.user`` when the
        exchange completes."""
        if exchange.mechanism == "PLAIN":
            user = self._plain(token)
            self._admit(user, session, exchange)
            return b""
        if exchange.scram is None:
            return self._scram_first(exchange, token)
        return self._scram_final(exchange, token, session)

    def _plain(self, token: bytes) -> str:
        """RFC 4616 as Kafka's PlainSaslServer: ``authzid NUL authcid NUL passwd``."""
        parts = token.split(b"\x00")
        if len(parts) != 3:
            raise SaslFailure("Invalid SASL/PLAIN response: expected 3 tokens, got "
                              f"{len(parts)}")
        authzid, username, password = (p.decode("utf-8", "replace") for p in parts)
        if not username:
            raise SaslFailure("Authentication failed: username not specified")
        if not password:
            raise SaslFailure("Authentication failed: password not specified")
        if authzid and authzid != username:
            raise SaslFailure("Authentication failed: Client requested an authorization id "
                              "that is different from username")
        user = self.broker.users.users.get(username)
        if user is None or not check_password(password, user.password_hash):
            raise SaslFailure(INVALID)
        return username

    def _scram_first(self, exchange: SaslExchange, token: bytes) -> bytes:
        mechanism = exchange.mechanism
        assert mechanism is not None

        def credential(username: str) -> ScramCredential:
            user = self.broker.users.users.get(username)
            if user is None:
                raise ScramFailure(f"Authentication failed during authentication due to "
                                   f"invalid credentials with SASL mechanism {mechanism}")
            if mechanism not in user.scram:
                raise ScramFailure(
                    f"Authentication failed: user '{username}' has no {mechanism} credentials "
                    f"(its password was only given hashed: set its password again, or use "
                    f"SASL PLAIN)")
            return user.scram[mechanism]

        exchange.scram = ScramExchange(mechanism, credential)
        try:
            return exchange.scram.first(token)
        except ScramFailure as exc:
            raise SaslFailure(str(exc)) from None

    def _scram_final(self, exchange: SaslExchange, token: bytes, session: Any) -> bytes:
        scram = exchange.scram
        try:
            final = scram.final(token)
        except ScramFailure as exc:
            raise SaslFailure(str(exc)) from None
        self._admit(scram.username, session, exchange)
        return final

    def _admit(self, user: str, session: Any, exchange: SaslExchange) -> None:
        """The credentials were right: the loopback rule and vhost access decide."""
        if not may_connect_from(self.broker.config, user, session.peer):
            raise SaslFailure(f"Authentication failed: user '{user}' may only connect via "
                              f"localhost")
        if not vhost_allowed(self.broker, self.vhost, user):
            raise SaslFailure(f"Authentication failed: user '{user}' has no access to vhost "
                              f"'{self.vhost}' (the Kafka vhost)")
        exchange.done = True
        exchange.scram = None
        session.user = user
        log.info("Kafka client %s authenticated as '%s' (SASL %s)", session.peer, user,
                 exchange.mechanism)
