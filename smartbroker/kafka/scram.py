"""The server side of one SCRAM-SHA-256/512 exchange (RFC 5802, RFC 7677) over Kafka SASL:
``scramp`` runs it; what is ours is the credential lookup and one leniency of Kafka's.

Kafka's ScramSaslServer accepts a client-final message whose nonce *ends with* the
server's nonce (``endsWith``, not equality), and librdkafka 2.0 (Debian's kcat) sends the
client nonce twice in it. scramp is strict, so for that message alone the proof is checked
here, as Kafka does, over the exact bytes the client signed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable

from scramp import ScramException, ScramMechanism

from smartbroker.auth import ScramCredential

_HASHES = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}


class ScramFailure(Exception):
    """The exchange failed; the text is for the client (SASL_AUTHENTICATION_FAILED)."""


def _attributes(message: str) -> dict[str, str]:
    return {part[0]: part[2:] for part in message.split(",") if len(part) >= 2 and part[1] == "="}


class ScramExchange:
    """client-first -> server-first, client-final -> server-final, for one mechanism."""

    def __init__(self, mechanism: str,
                 lookup: Callable[[str], ScramCredential]) -> None:
        """``lookup(username)`` returns the user's credential or raises ScramFailure."""
        self.mechanism = mechanism
        self.lookup = lookup
        self.username: str | None = None
        self._credential: ScramCredential | None = None
        self._failure: ScramFailure | None = None
        self._server = ScramMechanism(mechanism).make_server(self._auth_info)
        self._client_first_bare = ""
        self._server_first = ""

    def _auth_info(self, username: str) -> tuple[bytes, bytes, bytes, int]:
        try:
            cred = self.lookup(username)
        except ScramFailure as exc:
            self._failure = exc  # scramp wraps what this raises: kept to re-raise as is
            raise
        self.username, self._credential = username, cred
        return cred.salt, cred.stored_key, cred.server_key, cred.iterations

    def first(self, token: bytes) -> bytes:
        try:
            client_first = token.decode("utf-8")
            self._server.set_client_first(client_first)
            self._server_first = self._server.get_server_first()
        except (ScramException, UnicodeDecodeError) as exc:
            if self._failure is not None:
                raise self._failure from None
            raise ScramFailure(f"Authentication failed: invalid SCRAM client-first message "
                               f"({exc})") from None
        # gs2 header "n,," (or "n,a=authzid,"), then the bare message
        self._client_first_bare = client_first.split(",", 2)[2]
        return self._server_first.encode()

    def final(self, token: bytes) -> bytes:
        refused = ScramFailure(f"Authentication failed during authentication due to invalid "
                               f"credentials with SASL mechanism {self.mechanism}")
        try:
            client_final = token.decode("utf-8")
        except UnicodeDecodeError:
            raise refused from None
        nonce = _attributes(self._server_first).get("r", "")
        sent = _attributes(client_final).get("r", "")
        if sent != nonce and sent.endswith(nonce) and nonce:
            return self._final_kafka_lenient(client_final, refused)
        try:
            self._server.set_client_final(client_final)
            return self._server.get_server_final().encode()
        except ScramException:
            raise refused from None

    def _final_kafka_lenient(self, client_final: str, refused: ScramFailure) -> bytes:
        """RFC 5802 section 3 over the message as sent (Kafka's endsWith nonce rule)."""
        cred = self._credential
        head, sep, proof_b64 = client_final.rpartition(",p=")
        if cred is None or not sep:
            raise refused
        digest = _HASHES[self.mechanism]
        auth_message = f"{self._client_first_bare},{self._server_first},{head}".encode()
        signature = hmac.new(cred.stored_key, auth_message, digest).digest()
        try:
            proof = base64.b64decode(proof_b64, validate=True)
        except ValueError:
            raise refused from None
        if len(proof) != len(signature):
            raise refused
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(digest(client_key).digest(), cred.stored_key):
            raise refused
        server_signature = hmac.new(cred.server_key, auth_message, digest).digest()
        return b"v=" + base64.b64encode(server_signature)
