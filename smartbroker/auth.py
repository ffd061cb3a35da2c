"""Users and password checks, hashed as RabbitMQ's default (salted SHA-256), and the
SCRAM credentials (RFC 5802) that Kafka's SCRAM-SHA-256/512 logins need: the password is
only kept hashed, so they are derived whenever a password is set in plain text."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from typing import Any

from scramp import ScramMechanism

SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
SCRAM_ITERATIONS = 4096  # Kafka's default (and minimum) for kafka-configs --add-config

def hash_password(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256`` format: base64(salt + sha256(salt + pw))."""
    salt = salt if salt is not None else os.urandom(4)
    digest = hashlib.sha256(salt + password.encode()).digest()
    return base64.b64encode(salt + digest).decode()


def check_password(password: str, password_hash: str) -> bool:
    try:
        raw = base64.b64decode(password_hash)
    except ValueError:
        return False
    salt = raw[:4]
    return hmac.compare_digest(hash_password(password, salt), password_hash)


@dataclass(frozen=True)
class ScramCredential:
    """What a SCRAM server keeps of a password (RFC 5802 section 3), never the password."""

    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int

    def as_row(self) -> tuple[str, int, str, str]:
        """(salt, iterations, stored key, server key), base64 as Kafka's kafka-configs."""
        b64 = base64.b64encode
        return (b64(self.salt).decode(), self.iterations, b64(self.stored_key).decode(),
                b64(self.server_key).decode())

    @classmethod
    def from_row(cls, salt: str, iterations: int, stored_key: str, server_key: str) -> ScramCredential:
        b64 = base64.b64decode
        return cls(b64(salt), b64(stored_key), b64(server_key), int(iterations))


def scram_credentials(password: str) -> dict[str, ScramCredential]:
    """A fresh salted credential per SCRAM mechanism for ``password``."""
    out = {}
    for mechanism in SCRAM_MECHANISMS:
        salt, stored, server, i = ScramMechanism(mechanism).make_auth_info(
            password, iteration_count=SCRAM_ITERATIONS)
        out[mechanism] = ScramCredential(salt, stored, server, i)
    return out


@dataclass
class User:
    name: str
    password_hash: str
    tags: list[str] = field(default_factory=list)
    limits: dict[str, int] = field(default_factory=dict)  # max-connections, max-channels
    # SCRAM mechanism -> credential; empty when the password was only ever given hashed
    scram: dict[str, ScramCredential] = field(default_factory=dict)


class Users:
    def __init__(self, listener: Any = None) -> None:
        """``listener``: the definitions recorder told about every change (None: nothing
        is persisted); given here, never set afterwards."""
        self.users: dict[str, User] = {}
        self.listener = listener

    def add(self, name: str, password: str, tags: list[str] | None = None) -> User:
        """Create or replace a user (password hashed, SCRAM credentials derived)."""
        return self.save(User(name, hash_password(password), list(tags or []),
                              scram=scram_credentials(password)))

    def save(self, user: User, *, keep_scram: bool = True) -> User:
        """Store ``user``. One saved without SCRAM credentials keeps the old ones while its
        password hash is unchanged (a change of tags), and loses them with a new hash;
        ``keep_scram=False``: its credentials are exactly ``user.scram`` (Kafka's
        AlterUserScramCredentials deleting the last one)."""
        old = self.users.get(user.name)
        if keep_scram and not user.scram and old is not None \
                and old.password_hash == user.password_hash:
            user.scram = old.scram
        self.users[user.name] = user
        if self.listener is not None:
            self.listener.user_saved(user.name, user.password_hash, user.tags)
            self.listener.user_scram_saved(user.name, {m: c.as_row() for m, c in user.scram.items()})
        return user

    def delete(self, name: str) -> bool:
        if self.users.pop(name, None) is None:
            return False
        if self.listener is not None:
            self.listener.user_deleted(name)
        return True

    def restore(self, name: str, password_hash: str, tags: list[str]) -> User:
        """A user loaded from the definitions store (already hashed)."""
        user = User(name, password_hash, list(tags))
        self.users[name] = user
        return user

    def authenticate(self, name: str, password: str) -> User | None:
        user = self.users.get(name)
        if user is None or not check_password(password, user.password_hash):
            return None
        return user
