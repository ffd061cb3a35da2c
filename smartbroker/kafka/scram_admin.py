"""DescribeUserScramCredentials (50) and AlterUserScramCredentials (51), KIP-554, over the
broker's own users: the SCRAM credentials SaslAuthenticate checks (``auth.User.scram``,
mechanism -> salt, stored key, server key, iterations; persisted with the user).

Kafka keeps SCRAM credentials per principal with no user entity, so an upsertion for a
name the broker does not know creates the user, without a password (no AMQP or PLAIN
login, as a RabbitMQ user whose password was cleared) and without permissions: as any new
user it needs access to the Kafka vhost before its SCRAM login succeeds. An upsertion for
a known user replaces that mechanism's credential only: its password (AMQP, PLAIN) and its
other mechanism stay, as Kafka keeps SCRAM and PLAIN apart. A deletion removes one
mechanism's credential; the user stays.

The client salts the password (``SaltedPassword``); the broker derives the stored and
server keys from it (RFC 5802), as Kafka's ScramFormatter, and never sees the password.
Checks and error texts are Kafka's (ScramControlManager, ScramImage): a user named twice in
one request is DUPLICATE_RESOURCE (for Alter: in deletions and upsertions together), an
empty name or iterations outside 4096-16384 UNACCEPTABLE_CREDENTIAL, a mechanism other than
SCRAM-SHA-256 (1) and SCRAM-SHA-512 (2) UNSUPPORTED_SASL_MECHANISM, deleting or describing
a credential that does not exist RESOURCE_NOT_FOUND. Permissions map as the cluster's
authorized operations (``authz.cluster_operations``): Describe needs DESCRIBE (access to the
Kafka vhost), Alter needs ALTER (the ``administrator`` tag); else
CLUSTER_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
from collections import Counter
from typing import Any

from smartbroker.auth import ScramCredential, User
from smartbroker.kafka import codec
from smartbroker.kafka.authz import ALTER, DESCRIBE, cluster_operations
from smartbroker.kafka.errors import ErrorCode

log = logging.getLogger("smartbroker.kafka")
DESCRIBE_SCRAM, ALTER_SCRAM = 50, 51
VERSIONS = {DESCRIBE_SCRAM: (0, 0), ALTER_SCRAM: (0, 0)}
MECHANISMS = {1: "SCRAM-SHA-256", 2: "SCRAM-SHA-512"}  # Kafka's ScramMechanism.type()
_TYPES = {name: kind for kind, name in MECHANISMS.items()}
_HASHES = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}
MIN_ITERATIONS, MAX_ITERATIONS = 4096, 16384  # Kafka's, for both mechanisms
_CLUSTER_REFUSED = "Cluster authorization failed."  # Errors.CLUSTER_AUTHORIZATION_FAILED's


class Refused(Exception):
    """One user's alteration refused: its Kafka error code and message."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def credential(mechanism: str, salt: bytes, salted_password: bytes,
               iterations: int) -> ScramCredential:
    """What the server keeps (RFC 5802 section 3) from a client-salted password."""
    digest = _HASHES[mechanism]
    client_key = hmac.new(salted_password, b"Client Key", digest).digest()
    server_key = hmac.new(salted_password, b"Server Key", digest).digest()
    return ScramCredential(salt, digest(client_key).digest(), server_key, iterations)


class ScramAdmin:
    """The two handlers, on ``broker``'s users; ``vhost`` is the Kafka vhost (authz)."""

    def __init__(self, broker: Any, vhost: str) -> None:
        self.broker = broker
        self.vhost = vhost

    # -- DescribeUserScramCredentials ------------------------------------------------------

    def describe(self, request: Any, session: Any) -> Any:
        cls = codec.response_class(DESCRIBE_SCRAM)
        result = cls.DescribeUserScramCredentialsResult
        if DESCRIBE not in cluster_operations(self.broker, self.vhost):
            return cls(version=request.api_version, throttle_time_ms=0,
                       error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                       error_message=_CLUSTER_REFUSED, results=[])
        users = self.broker.users.users
        wanted = request.body.users
        if not wanted:  # null or empty: every user with a credential
            names = sorted(name for name, user in users.items() if user.scram)
            counts: Counter[str] = Counter(names)
        else:
            names = list(dict.fromkeys(u.name for u in wanted))
            counts = Counter(u.name for u in wanted)
        results = []
        for name in names:
            user = users.get(name)
            code, message, infos = ErrorCode.NONE, None, []
            if counts[name] > 1:
                code, message = ErrorCode.DUPLICATE_RESOURCE, (
                    "Cannot describe SCRAM credentials for the same user twice in a single "
                    f"request: {name}")
            elif user is None or not user.scram:
                code, message = ErrorCode.RESOURCE_NOT_FOUND, (
                    f"Attempt to describe a user credential that does not exist: {name}")
            else:
                infos = [result.CredentialInfo(mechanism=_TYPES[m], iterations=c.iterations)
                         for m, c in sorted(user.scram.items()) if m in _TYPES]
            results.append(result(user=name, error_code=code, error_message=message,
                                  credential_infos=infos))
        return cls(version=request.api_version, throttle_time_ms=0, error_code=ErrorCode.NONE,
                   error_message=None, results=results)

    # -- AlterUserScramCredentials ---------------------------------------------------------

    def alter(self, request: Any, session: Any) -> Any:
        cls = codec.response_class(ALTER_SCRAM)
        result = cls.AlterUserScramCredentialsResult
        body = request.body
        if ALTER not in cluster_operations(self.broker, self.vhost):
            named = dict.fromkeys([d.name for d in body.deletions]
                                  + [u.name for u in body.upsertions])
            return cls(version=request.api_version, throttle_time_ms=0, results=[
                result(user=name, error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
                       error_message=_CLUSTER_REFUSED) for name in named])
        deletions: dict[str, Any] = {}
        upsertions: dict[str, Any] = {}
        errors: dict[str, Refused] = {}
        duplicate = Refused(ErrorCode.DUPLICATE_RESOURCE,
                            "A user credential cannot be altered twice in the same request")
        # Kafka's order: deletions, then upsertions; a name seen before is a duplicate
        for op, check, into in [(d, self._check_deletion, deletions) for d in body.deletions] + \
                               [(u, _check_upsertion, upsertions) for u in body.upsertions]:
            name = op.name
            if name in errors:
                continue
            if deletions.pop(name, None) is not None or upsertions.pop(name, None) is not None:
                errors[name] = duplicate
                continue
            try:
                check(op)
            except Refused as exc:
                errors[name] = exc
                continue
            into[name] = op
        results = []
        for name, op in deletions.items():
            self._delete(name, MECHANISMS[op.mechanism])
            results.append(result(user=name, error_code=ErrorCode.NONE, error_message=None))
        for name, op in upsertions.items():
            self._upsert(name, op)
            results.append(result(user=name, error_code=ErrorCode.NONE, error_message=None))
        results += [result(user=name, error_code=exc.code, error_message=str(exc))
                    for name, exc in errors.items()]
        return cls(version=request.api_version, throttle_time_ms=0, results=results)

    def _check_deletion(self, op: Any) -> None:
        _check_name_and_mechanism(op)
        user = self.broker.users.users.get(op.name)
        if user is None or MECHANISMS[op.mechanism] not in user.scram:
            raise Refused(ErrorCode.RESOURCE_NOT_FOUND,
                          "Attempt to delete a user credential that does not exist")

    def _delete(self, name: str, mechanism: str) -> None:
        user = self.broker.users.users[name]
        scram = {m: c for m, c in user.scram.items() if m != mechanism}
        self.broker.users.save(dataclasses.replace(user, scram=scram), keep_scram=False)
        log.info("Kafka AlterUserScramCredentials: %s credential of user %r deleted",
                 mechanism, name)

    def _upsert(self, name: str, op: Any) -> None:
        mechanism = MECHANISMS[op.mechanism]
        new = credential(mechanism, bytes(op.salt), bytes(op.salted_password), op.iterations)
        users = self.broker.users
        user = users.users.get(name)
        if user is None:  # Kafka needs no user entity: a user without a password
            user = User(name, "", [])
            log.info("Kafka AlterUserScramCredentials: user %r created (SCRAM only, no "
                     "password, no permissions)", name)
        users.save(dataclasses.replace(user, scram={**user.scram, mechanism: new}),
                   keep_scram=False)
        log.info("Kafka AlterUserScramCredentials: %s credential of user %r set (%d "
                 "iterations)", mechanism, name, op.iterations)


def _check_name_and_mechanism(op: Any) -> None:
    if not op.name:
        raise Refused(ErrorCode.UNACCEPTABLE_CREDENTIAL, "Username must not be empty")
    if op.mechanism not in MECHANISMS:
        raise Refused(ErrorCode.UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism")


def _check_upsertion(op: Any) -> None:
    _check_name_and_mechanism(op)
    if op.iterations < MIN_ITERATIONS:
        raise Refused(ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too few iterations")
    if op.iterations > MAX_ITERATIONS:
        raise Refused(ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too many iterations")
    if not op.salt or not op.salted_password:  # Kafka's HMAC refuses an empty key
        raise Refused(ErrorCode.UNACCEPTABLE_CREDENTIAL, "Salt and salted password must "
                      "not be empty")
