"""DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554) with
confluent-kafka's AdminClient over the broker's users: ApiVersions advertises both, an
upsertion changes what a SCRAM login accepts at once (that mechanism only: the password,
PLAIN and the other mechanism stay), creates a user Kafka-style (SCRAM only, no
permissions until granted), a deletion removes one mechanism's credential; Kafka's errors
(UNACCEPTABLE_CREDENTIAL, RESOURCE_NOT_FOUND, DUPLICATE_RESOURCE, UNSUPPORTED_SASL_MECHANISM)
and the cluster permission mapping (CLUSTER_AUTHORIZATION_FAILED for a non-administrator's
alteration). Edge cases a client library checks itself go over a bare socket."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kafka.protocol.admin import (
    AlterUserScramCredentialsRequest,
    DescribeUserScramCredentialsRequest,
)
from kafka.protocol.metadata import ApiVersionsRequest
from kafka.protocol.sasl import (
    SaslAuthenticateRequest,
    SaslAuthenticateResponse,
    SaslHandshakeRequest,
    SaslHandshakeResponse,
)
from scramp import ScramClient

from smartbroker.launcher import BrokerProcess
from tests.kafka.kafka_brokers import own_kafka
from tests.kafka.raw_client import Raw, mark, quiet
from tests.kafka.sasl_helpers import (
    PASSWORD,
    add_user,
    api,
    confluent_consume,
    confluent_produce,
    confluent_sasl,
    topic_name,
)
from tests.kafka.wire import recv_frame

ck = pytest.importorskip("confluent_kafka")
cka = pytest.importorskip("confluent_kafka.admin")
SHA256, SHA512 = cka.ScramMechanism.SCRAM_SHA_256, cka.ScramMechanism.SCRAM_SHA_512
RESOURCE_NOT_FOUND, DUPLICATE_RESOURCE, UNACCEPTABLE_CREDENTIAL = 91, 92, 93
UNSUPPORTED_SASL_MECHANISM, CLUSTER_AUTHORIZATION_FAILED = 33, 31


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    with own_kafka("smartbroker-kafka-scram-admin-") as proc:
        yield proc


@pytest.fixture(scope="module")
def admin(broker: BrokerProcess) -> Any:
    """As the default user (guest, an administrator, on loopback without SASL)."""
    return cka.AdminClient({"bootstrap.servers": broker.kafka_bootstrap})


def user(broker: BrokerProcess, **kw: Any) -> str:
    name = f"u-{uuid.uuid4().hex[:8]}"
    add_user(broker, name, **kw)
    return name


def logs_in(broker: BrokerProcess, mechanism: str, name: str, password: str) -> bool:
    """Whether ``name`` can produce and read back a record with SASL ``mechanism``
    (confluent-kafka; for logins expected to succeed: after a refused one the client
    leaves a Python exception set, so refusals are checked by ``refused``)."""
    config = confluent_sasl(broker.kafka_bootstrap, mechanism, name, password)
    topic = topic_name("scram")
    delivered, _errors = confluent_produce(config, topic, [b"x"], timeout=5)
    return delivered == [None] and confluent_consume(config, topic, 1, timeout=10) == [b"x"]


def refused(broker: BrokerProcess, mechanism: str, name: str, password: str) -> bool:
    """Whether the broker refuses this SASL login (SaslHandshake v1, SaslAuthenticate v1,
    on a bare socket; the SCRAM client side is scramp's)."""
    with Raw(broker.kafka_port) as raw:
        def call(cls: Any, answer: Any, **fields: Any) -> Any:
            raw.sock.sendall(raw.encode(cls, 1, **fields))
            return answer.decode(recv_frame(raw.sock)[4:], version=1)  # after the corr. id

        assert call(SaslHandshakeRequest, SaslHandshakeResponse,
                    mechanism=mechanism).error_code == 0
        if mechanism == "PLAIN":
            token = f"\0{name}\0{password}".encode()
        else:
            client = ScramClient([mechanism], name, password)
            first = call(SaslAuthenticateRequest, SaslAuthenticateResponse,
                         auth_bytes=client.get_client_first().encode())
            if first.error_code:
                return first.error_code == 58
            client.set_server_first(bytes(first.auth_bytes).decode())
            token = client.get_client_final().encode()
        final = call(SaslAuthenticateRequest, SaslAuthenticateResponse, auth_bytes=token)
        return final.error_code == 58  # SASL_AUTHENTICATION_FAILED


def upsert(admin: Any, name: str, mechanism: Any, password: str, iterations: int = 8192) -> None:
    alteration = cka.UserScramCredentialUpsertion(
        name, cka.ScramCredentialInfo(mechanism, iterations), password.encode())
    admin.alter_user_scram_credentials([alteration])[name].result(30)


def described(admin: Any, name: str) -> dict[Any, int]:
    got = admin.describe_user_scram_credentials([name])[name].result(30)
    return {info.mechanism: info.iterations for info in got.scram_credential_infos}


def error_of(future: Any) -> int:
    with pytest.raises(ck.KafkaException) as info:
        future.result(30)
    return info.value.args[0].code()


def test_api_versions_advertises_both(broker: BrokerProcess) -> None:
    with Raw(broker.kafka_port) as raw:
        keys = {k.api_key: (k.min_version, k.max_version)
                for k in raw.call(ApiVersionsRequest, 3, client_software_name="t",
                                  client_software_version="1").api_keys}
    assert keys[50] == (0, 0) and keys[51] == (0, 0)


def test_describe_lists_users_with_credentials(broker: BrokerProcess, admin: Any) -> None:
    name = user(broker)
    everyone = admin.describe_user_scram_credentials().result(30)
    assert {i.mechanism: i.iterations for i in everyone[name].scram_credential_infos} == {
        SHA256: 4096, SHA512: 4096}
    assert "guest" in everyone
    assert described(admin, name) == {SHA256: 4096, SHA512: 4096}
    missing = admin.describe_user_scram_credentials(["nobody-here"])["nobody-here"]
    assert error_of(missing) == RESOURCE_NOT_FOUND


def test_upsert_changes_one_mechanism_of_an_existing_user(broker: BrokerProcess,
                                                          admin: Any) -> None:
    since = mark(broker)
    name = user(broker)
    upsert(admin, name, SHA256, "rotated-pw")
    assert described(admin, name) == {SHA256: 8192, SHA512: 4096}
    assert logs_in(broker, "SCRAM-SHA-256", name, "rotated-pw")
    assert not refused(broker, "SCRAM-SHA-256", name, "rotated-pw")  # the check can pass
    assert refused(broker, "SCRAM-SHA-256", name, PASSWORD)
    assert logs_in(broker, "SCRAM-SHA-512", name, PASSWORD)  # the other mechanism stays
    assert logs_in(broker, "PLAIN", name, PASSWORD)  # and the password
    quiet(broker, since)


def test_upsert_creates_a_user_that_needs_permissions(broker: BrokerProcess,
                                                      admin: Any) -> None:
    name = f"new-{uuid.uuid4().hex[:8]}"
    upsert(admin, name, SHA512, "brand-new")
    assert described(admin, name) == {SHA512: 8192}
    assert refused(broker, "SCRAM-SHA-512", name, "brand-new")  # no vhost access yet
    api(broker, "PUT", f"/permissions/%2F/{name}", {"configure": ".*", "write": ".*",
                                                    "read": ".*"})
    assert logs_in(broker, "SCRAM-SHA-512", name, "brand-new")
    assert refused(broker, "PLAIN", name, "brand-new")  # SCRAM only: no password
    assert any(u["name"] == name for u in api(broker, "GET", "/users").json())


def test_delete_removes_one_mechanism(broker: BrokerProcess, admin: Any) -> None:
    name = user(broker)
    deletion = cka.UserScramCredentialDeletion(name, SHA512)
    admin.alter_user_scram_credentials([deletion])[name].result(30)
    assert described(admin, name) == {SHA256: 4096}
    assert refused(broker, "SCRAM-SHA-512", name, PASSWORD)
    assert logs_in(broker, "SCRAM-SHA-256", name, PASSWORD)
    again = admin.alter_user_scram_credentials([deletion])[name]
    assert error_of(again) == RESOURCE_NOT_FOUND
    last = cka.UserScramCredentialDeletion(name, SHA256)  # the last one: none left
    admin.alter_user_scram_credentials([last])[name].result(30)
    assert error_of(admin.describe_user_scram_credentials([name])[name]) == RESOURCE_NOT_FOUND
    assert logs_in(broker, "PLAIN", name, PASSWORD)


def test_too_few_or_too_many_iterations(broker: BrokerProcess, admin: Any) -> None:
    name = user(broker)
    for iterations in (1000, 20000):
        alteration = cka.UserScramCredentialUpsertion(
            name, cka.ScramCredentialInfo(SHA256, iterations), b"pw")
        assert error_of(admin.alter_user_scram_credentials([alteration])[name]) == \
            UNACCEPTABLE_CREDENTIAL
    assert described(admin, name) == {SHA256: 4096, SHA512: 4096}


def test_kafka_errors_over_a_bare_socket(broker: BrokerProcess) -> None:
    """What librdkafka refuses before sending: a user named twice, mechanism 0."""
    name = user(broker)
    R = AlterUserScramCredentialsRequest
    up = R.ScramCredentialUpsertion
    with Raw(broker.kafka_port) as raw:
        got = raw.call(R, 0, deletions=[R.ScramCredentialDeletion(name=name, mechanism=1)],
                       upsertions=[up(name=name, mechanism=2, iterations=4096, salt=b"s",
                                      salted_password=b"p" * 64),
                                   up(name="other-" + name, mechanism=0, iterations=4096,
                                      salt=b"s", salted_password=b"p" * 64),
                                   up(name="", mechanism=1, iterations=4096, salt=b"s",
                                      salted_password=b"p" * 64)])
        errors = {r.user: (r.error_code, r.error_message) for r in got.results}
        assert errors == {
            name: (DUPLICATE_RESOURCE,
                   "A user credential cannot be altered twice in the same request"),
            "other-" + name: (UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism"),
            "": (UNACCEPTABLE_CREDENTIAL, "Username must not be empty")}
        D = DescribeUserScramCredentialsRequest
        got = raw.call(D, 0, users=[D.UserName(name=name), D.UserName(name=name)])
        assert got.error_code == 0
        assert [(r.user, r.error_code) for r in got.results] == [(name, DUPLICATE_RESOURCE)]
    assert logs_in(broker, "SCRAM-SHA-256", name, PASSWORD)  # nothing was changed


def test_alter_needs_the_administrator_tag(broker: BrokerProcess) -> None:
    """A user with every permission but no tags may describe (DESCRIBE on the cluster:
    access to the Kafka vhost) but not alter (ALTER: administrator)."""
    name = user(broker)
    mine = cka.AdminClient(confluent_sasl(broker.kafka_bootstrap, "SCRAM-SHA-256", name,
                                          PASSWORD))
    assert described(mine, name) == {SHA256: 4096, SHA512: 4096}
    alteration = cka.UserScramCredentialUpsertion(
        name, cka.ScramCredentialInfo(SHA256, 4096), b"hijack")
    assert error_of(mine.alter_user_scram_credentials([alteration])[name]) == \
        CLUSTER_AUTHORIZATION_FAILED
    assert logs_in(broker, "SCRAM-SHA-256", name, PASSWORD)


def test_kafka_python_admin_and_login(broker: BrokerProcess) -> None:
    """kafka-python's admin client salts the password itself; its producer then logs in
    with SCRAM-SHA-512 and the new password."""
    kadmin = pytest.importorskip("kafka.admin")
    kafka = pytest.importorskip("kafka")
    name = user(broker)
    client = kadmin.KafkaAdminClient(bootstrap_servers=broker.kafka_bootstrap)
    try:
        assert client.alter_user_scram_credentials([kadmin.UserScramCredentialUpsertion(
            name, kadmin.ScramMechanism.SCRAM_SHA_512, "kp-pw", iterations=8192)]) == {
            name: None}
        infos = client.describe_user_scram_credentials([name])[name]["credential_infos"]
        assert {(i["mechanism"].name, i["iterations"]) for i in infos} == {
            ("SCRAM_SHA_256", 4096), ("SCRAM_SHA_512", 8192)}
    finally:
        client.close()
    producer = kafka.KafkaProducer(
        bootstrap_servers=broker.kafka_bootstrap, security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=name, sasl_plain_password="kp-pw")
    try:
        assert producer.send(topic_name("kp"), b"x").get(timeout=15).offset == 0
    finally:
        producer.close()


def test_credentials_survive_a_restart(broker: BrokerProcess) -> None:
    """Upserted and deleted credentials are the users' own, persisted with them (last in
    the module: it restarts the module's broker)."""
    admin = cka.AdminClient({"bootstrap.servers": broker.kafka_bootstrap})
    created = f"kept-{uuid.uuid4().hex[:8]}"
    upsert(admin, created, SHA256, "kept-pw")
    api(broker, "PUT", f"/permissions/%2F/{created}", {"configure": ".*", "write": ".*",
                                                       "read": ".*"})
    trimmed = user(broker)
    admin.alter_user_scram_credentials([cka.UserScramCredentialDeletion(trimmed, SHA256)])[
        trimmed].result(30)
    del admin
    broker.restart()
    admin = cka.AdminClient({"bootstrap.servers": broker.kafka_bootstrap})
    assert described(admin, created) == {SHA256: 8192}
    assert described(admin, trimmed) == {SHA512: 4096}
    assert logs_in(broker, "SCRAM-SHA-256", created, "kept-pw")
    assert refused(broker, "SCRAM-SHA-256", trimmed, PASSWORD)
