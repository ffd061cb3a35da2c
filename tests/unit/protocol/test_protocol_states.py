"""The transition table is the one place states change: the moves ``Connection`` inlines
for speed must be entries of it, and the table must be closed over its states."""

from __future__ import annotations

from pamqp import commands

from smartbroker.protocol import states
from smartbroker.protocol.states import CHANNEL, CLIENT, CONNECTION, SERVER, ChannelState, State


def test_inlined_channel_moves_are_table_entries() -> None:
    cs = ChannelState
    assert CHANNEL[(cs.OPEN, CLIENT, states.PUBLISH)] is cs.AWAIT_HEADER
    assert CHANNEL[(cs.AWAIT_HEADER, CLIENT, states.HEADER)] is cs.AWAIT_BODY
    assert CHANNEL[(cs.AWAIT_HEADER, CLIENT, states.HEADER_EMPTY)] is cs.OPEN
    assert CHANNEL[(cs.AWAIT_HEADER, CLIENT, states.FAIL)] is cs.OPEN
    assert CHANNEL[(cs.AWAIT_BODY, CLIENT, states.BODY)] is cs.AWAIT_BODY
    assert CHANNEL[(cs.AWAIT_BODY, CLIENT, states.BODY_LAST)] is cs.OPEN


def test_every_state_is_reachable_and_can_end() -> None:
    reached = {State.AWAIT_HEADER}
    changed = True
    while changed:
        changed = False
        for (state, _, _), after in CONNECTION.items():
            if state in reached and after not in reached:
                reached.add(after)
                changed = True
    assert reached == set(State)
    for state in State:
        assert CONNECTION[(state, CLIENT, states.EOF)] is State.CLOSED


def test_the_server_turn_states_are_left_only_by_sending() -> None:
    for (state, role, _), _after in CONNECTION.items():
        if state in states.SERVER_TURN:
            assert role is SERVER or _ == states.EOF


def test_handshake_is_strictly_ordered() -> None:
    order = [(State.AWAIT_START_OK, commands.Connection.StartOk),
             (State.AWAIT_TUNE_OK, commands.Connection.TuneOk),
             (State.AWAIT_OPEN, commands.Connection.Open)]
    for state, _ in order:
        allowed = {what for (s, role, what) in CONNECTION if s is state and role is CLIENT}
        assert allowed - {states.EOF} <= {cls for _, cls in order} | {commands.Connection.Close}
