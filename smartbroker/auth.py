"""Users and password checks, hashed as RabbitMQ's default (salted SHA-256)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from typing import Any


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


@dataclass
class User:
    name: str
    password_hash: str
    tags: list[str] = field(default_factory=list)
    limits: dict[str, int] = field(default_factory=dict)  # max-connections, max-channels


class Users:
    def __init__(self, listener: Any = None) -> None:
        """``listener``: the definitions recorder told about every change (None: nothing
        is persisted); given here, never set afterwards."""
        self.users: dict[str, User] = {}
        self.listener = listener

    def add(self, name: str, password: str, tags: list[str] | None = None) -> User:
        """Create or replace a user (password hashed)."""
        return self.save(User(name, hash_password(password), list(tags or [])))

    def save(self, user: User) -> User:
        self.users[user.name] = user
        if self.listener is not None:
            self.listener.user_saved(user.name, user.password_hash, user.tags)
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
