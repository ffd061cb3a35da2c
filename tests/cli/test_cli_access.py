"""CLI: vhosts add/delete, users set-permissions/set-topic-permissions, policies."""

from __future__ import annotations

import json
import time

import pika
import pika.exceptions


def test_vhost_add_grant_and_delete(cli, uid: str, broker_url: str) -> None:
    vhost, user = f"vh-{uid}", f"u-{uid}"
    assert cli("vhosts", "add", vhost).exit_code == 0
    assert cli("users", "add", user, "pw").exit_code == 0
    result = cli("users", "set-permissions", user, ".*", ".*", ".*", "--vhost", vhost)
    assert result.exit_code == 0, result.output
    host_port = broker_url.split("@", 1)[1].split("/", 1)[0]
    conn = pika.BlockingConnection(pika.URLParameters(f"amqp://{user}:pw@{host_port}/{vhost}"))
    conn.channel().queue_declare("inside", exclusive=True)
    conn.close()
    listed = json.loads(cli("vhosts", "list", "--json").output)
    assert vhost in {v["name"] for v in listed}
    assert cli("vhosts", "delete", vhost).exit_code == 0
    assert vhost not in {v["name"] for v in json.loads(cli("vhosts", "list", "--json").output)}
    missing = cli("vhosts", "delete", vhost)
    assert missing.exit_code != 0 and "not found" in missing.output
    cli("users", "delete", user)


def test_topic_permissions_set_enforced_and_cleared(cli, uid: str, broker_url: str) -> None:
    user = f"t-{uid}"
    assert cli("users", "add", user, "pw").exit_code == 0
    assert cli("users", "set-permissions", user, ".*", ".*", ".*").exit_code == 0
    result = cli("users", "set-topic-permissions", user, "amq.topic", "^allowed$", ".*")
    assert result.exit_code == 0, result.output
    host_port = broker_url.split("@", 1)[1].split("/", 1)[0]
    conn = pika.BlockingConnection(pika.URLParameters(f"amqp://{user}:pw@{host_port}/"))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("amq.topic", "allowed", b"ok")
        try:
            ch.basic_publish("amq.topic", "denied", b"no")
            raise AssertionError("publish with a denied routing key went through")
        except pika.exceptions.ChannelClosedByBroker as exc:
            assert exc.reply_code == 403
    finally:
        conn.close()
    assert cli("users", "clear-topic-permissions", user).exit_code == 0
    again = cli("users", "clear-topic-permissions", user)
    assert again.exit_code != 0 and "no topic permissions" in again.output
    cli("users", "delete", user)


def test_policy_set_list_delete_applies_live(cli, qname: str, broker_url: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    ch = conn.channel()
    ch.queue_declare(qname, exclusive=True)
    name = f"cap-{qname}"
    result = cli("policies", "set", name, f"^{qname}$", '{"max-length": 1}', "--priority", "5")
    assert result.exit_code == 0, result.output
    rows = json.loads(cli("policies", "list", "--json").output)
    mine = [r for r in rows if r["name"] == name]
    assert mine and mine[0]["definition"] == {"max-length": 1} and mine[0]["priority"] == 5
    ch.confirm_delivery()

    def depth() -> int:
        return ch.queue_declare(qname, passive=True).method.message_count

    def eventually(cond) -> bool:  # RabbitMQ applies policies asynchronously
        deadline = time.monotonic() + 10
        while not cond() and time.monotonic() < deadline:
            time.sleep(0.1)
        return cond()

    assert eventually(lambda: (ch.basic_publish("", qname, b"x"), depth())[1] == 1)  # applied live
    for body in (b"1", b"2", b"3"):
        ch.basic_publish("", qname, body)
    assert depth() == 1
    assert cli("policies", "delete", name).exit_code == 0
    assert eventually(lambda: (ch.basic_publish("", qname, b"y"), depth())[1] >= 2)
    conn.close()


def test_policy_errors_are_one_line(cli) -> None:
    bad_json = cli("policies", "set", "p", ".*", "{not json")
    assert bad_json.exit_code != 0 and bad_json.output.count("\n") <= 1
    refused = cli("policies", "set", "p", ".*", '{"max-priority": 5}')
    assert refused.exit_code != 0 and "max-priority" in refused.output


def test_set_and_clear_limits(cli, uid: str) -> None:
    vhost = f"lim-{uid}"
    cli("vhosts", "add", vhost)
    result = cli("vhosts", "set-limit", vhost, "max-queues", "5")
    assert result.exit_code == 0, result.output
    assert cli("vhosts", "set-limit", vhost, "max-queues", "none").exit_code == 0
    bad = cli("vhosts", "set-limit", vhost, "max-bananas", "1")
    assert bad.exit_code != 0 and "max-bananas" in bad.output
    assert cli("users", "set-limit", "guest", "max-channels", "none").exit_code == 0
    cli("vhosts", "delete", vhost)
