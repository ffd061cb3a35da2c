"""Two ``LinkConnection`` ends joined with no network (h11's ConnectionPair): bytes move
only when ``pump`` is called, so tests see every frame boundary and every event."""

from __future__ import annotations

from smartbroker.cluster.link_codec import ChannelSpec
from smartbroker.cluster.link_protocol import NEED_DATA, LinkConnection, Role

PUBLISH = ChannelSpec(1, "publish", "QB", 3)  # seq, flags | routing key, properties, body
SETTLE = ChannelSpec(2, "settle", "QB")  # delivery tag, op
CHANNELS = {spec.number: spec for spec in (PUBLISH, SETTLE)}


class Pair:
    def __init__(self, secret_a: bytes = b"s3cret", secret_b: bytes = b"s3cret",
                 window: int = 1 << 20, cluster_b: str = "c") -> None:
        self.a = LinkConnection(Role.DIALER, "a", "c", secret_a, CHANNELS, window=window)
        self.b = LinkConnection(Role.ACCEPTOR, "b", cluster_b, secret_b, CHANNELS,
                                window=window)
        self.events: dict[str, list] = {"a": [], "b": []}
        self.wire: dict[str, list[bytes]] = {"a": [], "b": []}  # writes each end made

    def pump(self, rounds: int = 10) -> None:
        """Move bytes both ways until nothing is left to send (each end's events go to
        ``self.events``)."""
        for _ in range(rounds):
            moved = False
            for src, dst, name in ((self.a, self.b, "b"), (self.b, self.a, "a")):
                data = src.data_to_send()
                if data:
                    moved = True
                    self.wire["a" if src is self.a else "b"].append(data)
                    dst.receive_data(data)
                    while (event := dst.next_event()) is not NEED_DATA:
                        self.events[name].append(event)
            if not moved:
                return

    def handshake(self) -> Pair:
        self.pump()
        return self
