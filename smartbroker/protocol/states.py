"""Every state of an AMQP 0-9-1 server connection and its channels, and every move.

Rule (h11's rule 1): anything that changes a connection's or a channel's state is an entry
of ``CONNECTION`` or ``CHANNEL`` below; ``Connection`` only looks them up (a few hot moves
are inlined there, each naming the entry it copies; ``tests/unit/protocol`` checks those
against this table). Both sides move the machine: receiving ``start-ok`` puts the server
in ``SEND_TUNE`` (its turn), sending ``tune`` puts it in ``AWAIT_TUNE_OK``. A move that is
not in the table is an illegal one: the caller turns it into RabbitMQ's error.
"""

from __future__ import annotations

import enum

from pamqp import commands


class State(enum.Enum):
    """Connection states. The names of the client's-turn states appear in RabbitMQ's
    503 text ("unexpected method X in state await_open"), so they keep these names."""

    AWAIT_HEADER = 0
    AWAIT_START_OK = 1
    AWAIT_TUNE_OK = 2
    AWAIT_OPEN = 3
    OPEN = 4
    CLOSING = 5  # we sent connection.close; only close / close-ok matter now
    CLOSED = 6
    SEND_START = 7  # the server's turn: header accepted, connection.start not sent yet
    SEND_TUNE = 8  # start-ok received: authenticate, then tune (or refuse)
    SEND_OPEN_OK = 9  # open received: check the vhost, then open-ok (or close)
    SEND_CLOSE_OK = 10  # the client sent connection.close: release, then close-ok


class ChannelState(enum.Enum):
    OPEN = 0
    AWAIT_HEADER = 1  # basic.publish seen, content header next
    AWAIT_BODY = 2  # content header seen, body frames until the declared size
    CLOSING = 3  # we sent channel.close: frames are dropped until close / close-ok
    CLOSED = 4  # forgotten: the number may be opened again


class Role(enum.Enum):
    CLIENT = 0  # a frame received
    SERVER = 1  # a frame sent


CLIENT, SERVER = Role.CLIENT, Role.SERVER

# Pseudo-events (strings) for what is not a connection-class method.
HEADER_OK = "protocol-header"
HEADER_BAD = "bad-protocol-header"
ABORT = "abort"  # the server drops the peer without a frame (failed handshake, bad header)
EOF = "eof"

C = commands.Connection
_HANDSHAKE_CLOSE_FROM = (State.SEND_TUNE, State.AWAIT_OPEN, State.SEND_OPEN_OK, State.OPEN)

CONNECTION: dict[tuple[State, Role, object], State] = {
    (State.AWAIT_HEADER, CLIENT, HEADER_OK): State.SEND_START,
    (State.AWAIT_HEADER, CLIENT, HEADER_BAD): State.CLOSED,
    (State.SEND_START, SERVER, C.Start): State.AWAIT_START_OK,
    (State.AWAIT_START_OK, CLIENT, C.StartOk): State.SEND_TUNE,
    (State.SEND_TUNE, SERVER, C.Tune): State.AWAIT_TUNE_OK,
    (State.AWAIT_TUNE_OK, CLIENT, C.TuneOk): State.AWAIT_OPEN,
    (State.AWAIT_OPEN, CLIENT, C.Open): State.SEND_OPEN_OK,
    (State.SEND_OPEN_OK, SERVER, C.OpenOk): State.OPEN,
    (State.AWAIT_OPEN, CLIENT, C.Close): State.SEND_CLOSE_OK,
    (State.OPEN, CLIENT, C.Close): State.SEND_CLOSE_OK,
    (State.OPEN, CLIENT, C.CloseOk): State.CLOSED,  # RabbitMQ hangs up on a stray close-ok
    (State.OPEN, CLIENT, C.UpdateSecret): State.OPEN,
    (State.OPEN, CLIENT, C.Blocked): State.OPEN,
    (State.OPEN, CLIENT, C.Unblocked): State.OPEN,
    (State.CLOSING, CLIENT, C.Close): State.SEND_CLOSE_OK,  # both sides closed at once
    (State.CLOSING, CLIENT, C.CloseOk): State.CLOSED,
    (State.SEND_CLOSE_OK, SERVER, C.CloseOk): State.CLOSED,
    **{(state, SERVER, C.Close): State.CLOSING for state in _HANDSHAKE_CLOSE_FROM},
    **{(state, SERVER, ABORT): State.CLOSED for state in State},
    **{(state, CLIENT, EOF): State.CLOSED for state in State},
}

# Methods the server sends that move the connection (others, such as connection.blocked,
# are sent in any state and move nothing).
SERVER_MOVES = frozenset({C.Start, C.Tune, C.OpenOk, C.Close, C.CloseOk})

# The server's turn: input waits (``next_event`` returns ``PAUSED``) until it has answered.
SERVER_TURN = frozenset({State.SEND_START, State.SEND_TUNE, State.SEND_OPEN_OK,
                         State.SEND_CLOSE_OK})
# Before tune-ok is through a failed handshake gets no connection.close (RabbitMQ).
HANDSHAKE = frozenset({State.SEND_START, State.AWAIT_START_OK, State.SEND_TUNE,
                       State.AWAIT_TUNE_OK})

# Channel pseudo-events
OPEN_METHOD = "channel.open"
PUBLISH = "basic.publish"
HEADER = "content-header"  # with a body to follow
HEADER_EMPTY = "content-header, body size 0"  # the message is complete
BODY = "content-body"  # more to come
BODY_LAST = "content-body, message complete"
FAIL = "failed"  # the protocol refused the message (size, delivery mode)
CLOSE = "channel.close"
CLOSE_OK = "channel.close-ok"

CS = ChannelState
CHANNEL: dict[tuple[ChannelState, Role, str], ChannelState] = {
    (CS.CLOSED, CLIENT, OPEN_METHOD): CS.OPEN,
    (CS.OPEN, CLIENT, PUBLISH): CS.AWAIT_HEADER,
    (CS.AWAIT_HEADER, CLIENT, HEADER): CS.AWAIT_BODY,
    (CS.AWAIT_HEADER, CLIENT, HEADER_EMPTY): CS.OPEN,
    (CS.AWAIT_HEADER, CLIENT, FAIL): CS.OPEN,  # ChannelFailed: the server closes it next
    (CS.AWAIT_BODY, CLIENT, BODY): CS.AWAIT_BODY,
    (CS.AWAIT_BODY, CLIENT, BODY_LAST): CS.OPEN,
    (CS.OPEN, CLIENT, CLOSE): CS.OPEN,  # the server answers close-ok next
    (CS.CLOSING, CLIENT, CLOSE): CS.CLOSING,
    (CS.CLOSING, CLIENT, CLOSE_OK): CS.CLOSED,
    (CS.OPEN, SERVER, CLOSE_OK): CS.CLOSED,
    (CS.CLOSING, SERVER, CLOSE_OK): CS.CLOSED,
    **{(state, SERVER, CLOSE): CS.CLOSING
       for state in (CS.OPEN, CS.AWAIT_HEADER, CS.AWAIT_BODY, CS.CLOSING)},
}


def connection_move(state: State, role: Role, what: object) -> State | None:
    """The state after ``what`` in ``state``, or ``None`` when the table has no such move."""
    return CONNECTION.get((state, role, what))


def channel_move(state: ChannelState, role: Role, what: str) -> ChannelState | None:
    return CHANNEL.get((state, role, what))


__all__ = [
    "CHANNEL", "CLIENT", "CONNECTION", "HANDSHAKE", "SERVER", "SERVER_MOVES", "SERVER_TURN",
    "ChannelState", "Role", "State", "channel_move", "connection_move",
]
