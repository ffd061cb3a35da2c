"""The soak's clients, one thread each: producers (confirms, mandatory, persistent),
consumers (manual ack, random reconnects and drops) and the queue churn loop. Each
reconnects on its own and counts an error only if the broker was up the whole time."""

from __future__ import annotations

import contextlib
import random

import pika
import pika.exceptions as pex
from soak_broker import Broker
from soak_state import QUEUES, State, drop_socket, now, sleep_unless


def producer(st: State, broker: Broker, n: int) -> None:
    rng = random.Random(st.seed * 1000 + n)
    seq = 0
    props = pika.BasicProperties(delivery_mode=2, content_type="text/plain")
    while not st.stop_producers.is_set():
        if not st.up.wait(0.5):
            continue
        try:
            conn = pika.BlockingConnection(broker.params())
        except Exception:  # noqa: BLE001
            st.count("producer_connect_failed")
            sleep_unless(st.stop_producers, rng.uniform(0.1, 0.5))
            continue
        st.count("producer_connections")
        epoch = st.epoch
        lifetime = now() + rng.uniform(2, 20)
        drop = rng.random() < 0.3
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            for q in QUEUES:
                ch.queue_declare(q, durable=True)
            while not st.stop_producers.is_set() and now() < lifetime:
                seq += 1
                q = rng.choice(QUEUES)
                mid = f"p{n}:{seq}"
                with st.lock:
                    st.attempted[mid] = q
                try:
                    ch.basic_publish("", q, f"{mid}|{q}".encode(), props, mandatory=True)
                except pex.UnroutableError:
                    st.unroutable.add(mid)
                    continue
                except pex.NackError:
                    st.nacked.add(mid)
                    continue
                st.confirmed.add(mid)
            if drop:
                drop_socket(conn)
            else:
                conn.close()
        except Exception as e:  # noqa: BLE001 - connection lost: that publish is unconfirmed
            st.count("producer_conn_errors")
            if st.up.is_set() and broker.alive() and st.epoch == epoch:
                st.error(f"producer:{type(e).__name__}")
                st.event("producer_error", error=repr(e)[:300])
            with contextlib.suppress(Exception):
                conn.close()
            sleep_unless(st.stop_producers, rng.uniform(0.05, 0.3))


# ----------------------------------------------------------------------------- consumer


def consumer(st: State, broker: Broker, n: int) -> None:
    rng = random.Random(st.seed * 1000 + 500 + n)
    conn_no = 0
    while not st.stop_all.is_set():
        if not st.up.wait(0.5):
            continue
        try:
            conn = pika.BlockingConnection(broker.params())
        except Exception:  # noqa: BLE001
            st.count("consumer_connect_failed")
            sleep_unless(st.stop_all, rng.uniform(0.1, 0.5))
            continue
        conn_no += 1
        key = f"c{n}.{conn_no}"
        st.count("consumer_connections")
        draining = st.draining.is_set()
        lifetime = now() + (1e9 if draining else rng.uniform(3, 25))
        mode = "close" if draining else rng.choice(["close", "close", "drop", "drop-unacked"])
        pending_ack: list[str] = []  # acks sent on this connection
        epoch = st.epoch
        unacked_left = 0

        def on_message(ch, method, _props, body, *, _key=key, mode=mode, lifetime=lifetime,
                       pending_ack=pending_ack) -> None:
            nonlocal unacked_left
            text = body.decode(errors="replace")
            mid, _, q = text.partition("|")
            with st.lock:
                st.deliveries[mid].append((st.t(), bool(method.redelivered), st.epoch, _key))
                st.last_delivery = now()
                if mid in st.ack_safe:
                    t_ack, e_ack = st.ack_safe[mid]
                    st.redelivered_after_safe_ack.append(
                        {"id": mid, "t_ack_safe": t_ack, "epoch_ack": e_ack, "t": st.t(),
                         "epoch": st.epoch, "redelivered": bool(method.redelivered),
                         "kill9_between": any(e_ack <= k < st.epoch for k in st.kill_epochs)})
                if q != method.routing_key or mid not in st.attempted or st.attempted[mid] != q:
                    st.bad_deliveries.append({"t": st.t(), "body": text[:200],
                                              "queue": method.routing_key,
                                              "published_to": st.attempted.get(mid)})
            if mode == "drop-unacked" and now() > lifetime - 1.0:
                unacked_left += 1  # leave it unacked: must come back after the drop
                return
            ch.basic_ack(method.delivery_tag)
            pending_ack.append(mid)

        try:
            ch = conn.channel()
            ch.basic_qos(prefetch_count=50)
            for q in QUEUES:
                ch.queue_declare(q, durable=True)
                ch.basic_consume(q, on_message)
            while not st.stop_all.is_set() and now() < lifetime:
                if draining != st.draining.is_set():
                    break  # reconnect in drain mode (long-lived, clean close)
                conn.process_data_events(time_limit=0.2)
            if mode == "close":
                conn.close()  # close-ok: the broker processed every ack sent before it
                with st.lock:
                    st.acked.update(pending_ack)
                    for mid in pending_ack:
                        st.ack_safe.setdefault(mid, (st.t(), epoch))
            else:
                drop_socket(conn)
                st.acked.update(pending_ack)
                if unacked_left:
                    st.count("consumer_drops_with_unacked")
                    st.count("unacked_left_on_drop", unacked_left)
            if not st.draining.is_set() and rng.random() < 0.25:
                st.count("consumer_pauses")  # let a backlog build up for the next restart
                sleep_unless(st.stop_all, rng.uniform(2, 15))
        except Exception as e:  # noqa: BLE001
            st.acked.update(pending_ack)
            st.count("consumer_conn_errors")
            if st.up.is_set() and broker.alive() and st.epoch == epoch:
                st.error(f"consumer:{type(e).__name__}")
                st.event("consumer_error", error=repr(e)[:300])
            with contextlib.suppress(Exception):
                conn.close()
            sleep_unless(st.stop_all, rng.uniform(0.05, 0.3))


# ----------------------------------------------------------------------------- churn


def churn(st: State, broker: Broker) -> None:
    rng = random.Random(st.seed * 1000 + 999)
    k = 0
    conn = None
    conn_epoch = -1
    while not st.stop_producers.is_set():
        if not st.up.wait(0.5):
            continue
        epoch = st.epoch
        step = "connect"
        try:
            if conn is None or not conn.is_open or conn_epoch != epoch:
                if conn is not None:  # opened before a restart: gone
                    with contextlib.suppress(Exception):
                        conn.close()
                conn_epoch = epoch
                conn = pika.BlockingConnection(broker.params())
                ch = conn.channel()
                ch.confirm_delivery()
            k += 1
            name = f"soak.churn.{k}"
            durable = rng.random() < 0.5
            step = "declare"
            ch.queue_declare(name, durable=durable, arguments={"x-max-length": 1000})
            st.count("churn_created")
            bodies = [f"churn:{k}:{i}".encode() for i in range(rng.randint(1, 10))]
            step = "publish"
            for b in bodies:
                ch.basic_publish("", name, b, pika.BasicProperties(delivery_mode=2),
                                 mandatory=True)
            step = "get"
            got = []
            for _ in range(len(bodies) + 1):
                _m, _p, body = ch.basic_get(name, auto_ack=True)
                if body is None:
                    break
                got.append(body)
            if got != bodies:
                st.error("churn:get-mismatch")
                st.event("churn_mismatch", queue=name, published=len(bodies), got=len(got))
            step = "delete"
            ch.queue_delete(name)
            st.count("churn_deleted")
            if rng.random() < 0.2:
                conn.close()
                conn = None
        except Exception as e:  # noqa: BLE001
            if st.up.is_set() and st.epoch == epoch and broker.alive():
                st.error(f"churn:{step}:{type(e).__name__}")
                st.event("churn_error", step=step, error=repr(e)[:300])
            else:
                st.count("churn_interrupted_by_restart")
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            conn = None
        sleep_unless(st.stop_producers, rng.uniform(0.05, 0.4))
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()
