"""The Unix socket that carries a client's TCP socket between the workers of one machine.

``server/handoff.py`` decides when a connection moves and rebuilds it; this module moves
it: the file descriptor goes with SCM_RIGHTS (``socket.send_fds``) beside the connection's
state and unread bytes, on a Unix socket each worker listens on (in its data directory,
mode 0600, and only a peer of our own uid is served). Its address and this machine's id
are in the worker's membership record, so a worker only hands to siblings of its host.

The exchange is two-phase, so the connection is never served by both workers, nor lost
while the source still has it:

    source -> target   head (magic, lengths) + state, with the fd; then the unread bytes
    target -> source   "R" (ready: the connection object is built) or "N" + why
    source             closes its copy of the socket (close, never shutdown: no FIN)
    source -> target   "G": from now on the target reads and writes the socket

No "R" in time, or no "G": the target drops its copy (a plain close) and the source keeps
serving the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smartbroker.server.handoff import Handoff, HandoffRefused

log = logging.getLogger("smartbroker.cluster")

MAGIC = b"SBH1"
_HEAD = struct.Struct("!4sII")  # magic, state length, unread bytes length
READY, GO, NO = b"R", b"G", b"N"
TIMEOUT = 5.0  # seconds for each step of a handover
MAX_STATE = 1 << 20
MAX_CARRIED = 256 << 20  # input buffered on the source (bounded there by frame_max)
_UNIX_PATH_MAX = 100  # sun_path is 108 bytes with its NUL: longer paths go abstract
_ucred = struct.Struct("3i")


def host_id() -> str:
    """This machine (and boot): siblings must share it to pass sockets."""
    boot = ""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return f"{socket.gethostname()}/{boot}"


def address_for(data_dir: Path, node_id: str) -> str:
    """``<data-dir>/handoff.sock``, or an abstract name (``@...``) when that path is too
    long for a Unix socket address."""
    path = str((data_dir / "handoff.sock").resolve())
    return path if len(path.encode()) < _UNIX_PATH_MAX else f"@smartbroker-handoff-{node_id}"


def _sockaddr(address: str) -> str | bytes:
    return b"\0" + address[1:].encode() if address.startswith("@") else address


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int,
                        data: bytes = b"") -> bytes:
    while len(data) < size:
        more = await asyncio.wait_for(loop.sock_recv(sock, min(size - len(data), 1 << 20)),
                                      TIMEOUT)
        if not more:
            raise ConnectionError("closed by the other worker")
        data += more
    return data


async def send_connection(address: str, state: bytes, carried: bytes, fd: int,
                          release: Callable[[], None]) -> None:
    """The source's side (``server/handoff.Sender``)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, _sockaddr(address)), TIMEOUT)
        head = _HEAD.pack(MAGIC, len(state), len(carried)) + state
        await _writable(loop, sock)
        sent = socket.send_fds(sock, [head], [fd])  # a fresh socket: the head fits
        await asyncio.wait_for(loop.sock_sendall(sock, head[sent:] + carried), TIMEOUT)
        answer = await asyncio.wait_for(loop.sock_recv(sock, 512), TIMEOUT)
        if answer[:1] != READY:
            raise HandoffRefused(answer[1:].decode(errors="replace") or "no answer")
        release()
        try:
            await asyncio.wait_for(loop.sock_sendall(sock, GO), TIMEOUT)
        except (OSError, TimeoutError) as exc:  # the target died: so did the connection
            log.warning("handover to %s: the target went away after ready: %s", address, exc)
    finally:
        sock.close()


async def _ready(loop: asyncio.AbstractEventLoop, sock: socket.socket, write: bool) -> None:
    """Wait until ``sock`` is readable (or writable): what recv_fds/send_fds need."""
    done = loop.create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    fd = sock.fileno()
    (loop.add_writer if write else loop.add_reader)(fd, wake)
    try:
        await asyncio.wait_for(done, TIMEOUT)
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def _writable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    await _ready(loop, sock, True)


class HandoffListener:
    """The target's side: accepts handovers and gives them to ``handoff`` (adopt, then
    attach once the source said go)."""

    def __init__(self, address: str, handoff: Handoff) -> None:
        self.address = address
        self.handoff = handoff
        self._sock: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if not self.address.startswith("@"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)  # a previous run's
        sock.bind(_sockaddr(self.address))
        if not self.address.startswith("@"):
            os.chmod(self.address, 0o600)
        sock.listen(16)
        sock.setblocking(False)
        self._sock = sock
        self._spawn(self._accept(sock))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                peer, _ = await loop.sock_accept(listener)
            except OSError as exc:
                log.warning("handover listener: %s", exc)
                await asyncio.sleep(0.1)
                continue
            peer.setblocking(False)
            self._spawn(self._serve(peer))

    async def _serve(self, sock: socket.socket) -> None:
        fds: list[int] = []
        try:
            await self._take(sock, fds)
        except (OSError, TimeoutError, ValueError, struct.error) as exc:
            log.warning("handover refused: %s: %s", type(exc).__name__, exc)
        except Exception as exc:  # never a traceback for a bad peer
            log.warning("handover failed: %s: %s", type(exc).__name__, exc)
        finally:
            for fd in fds:  # not taken: our copy goes, the source's stays (no FIN)
                os.close(fd)
            sock.close()

    async def _take(self, sock: socket.socket, fds: list[int]) -> None:
        loop = asyncio.get_running_loop()
        _, uid, _ = _ucred.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                  _ucred.size))
        if uid != os.getuid():
            raise ValueError(f"peer uid {uid} is not ours")
        data = b""
        while not data:
            await _ready(loop, sock, False)
            try:
                data, got, flags, _ = socket.recv_fds(sock, 1 << 16, 1)
            except BlockingIOError:
                continue
            fds.extend(got)
            if not data:
                raise ConnectionError("closed by the other worker")
        if flags & socket.MSG_CTRUNC or len(fds) != 1:
            raise ValueError("expected one socket")
        data = await _recv_exactly(loop, sock, _HEAD.size, data)
        magic, state_len, carried_len = _HEAD.unpack_from(data)
        if magic != MAGIC or state_len > MAX_STATE or carried_len > MAX_CARRIED:
            raise ValueError("not a handover")
        data = await _recv_exactly(loop, sock, _HEAD.size + state_len + carried_len, data)
        state = data[_HEAD.size:_HEAD.size + state_len]
        carried = data[_HEAD.size + state_len:]
        try:
            conn = self.handoff.adopt(state, carried)
        except HandoffRefused as exc:
            await loop.sock_sendall(sock, NO + str(exc).encode()[:400])
            return
        await loop.sock_sendall(sock, READY)
        go = await asyncio.wait_for(loop.sock_recv(sock, 1), TIMEOUT)
        if go != GO:
            raise ConnectionError("the source kept the connection")
        client = socket.socket(fileno=fds.pop())
        try:
            await self.handoff.attach(conn, client)
        except BaseException:
            client.close()  # the source let go: the connection ends here
            raise

    async def close(self) -> None:
        await self.handoff.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            if not self.address.startswith("@"):
                with contextlib.suppress(OSError):
                    os.unlink(self.address)


def siblings(membership: Any, this_host: str) -> Callable[[str], str | None]:
    """``node -> handoff address`` for the workers of this machine that are up."""
    def address(node: str) -> str | None:
        if node == membership.name:
            return None
        record = membership.up.get(node)
        if record is None or not record.handoff or record.host_id != this_host:
            return None
        return record.handoff
    return address


async def start_handoff(cluster: Any, broker: Any, flusher: Any) -> HandoffListener:
    """``serve --workers``: listen for handovers, advertise where (the membership record
    registered next carries it), and let connections move (``broker.handoff``)."""
    membership = cluster.membership
    here = host_id()
    handoff = Handoff(broker, flusher, siblings(membership, here), send_connection)
    listener = HandoffListener(address_for(cluster.config.data_dir, membership.record.node_id),
                               handoff)
    await listener.start()
    membership.record = dataclasses.replace(membership.record, handoff=listener.address,
                                            host_id=here)
    broker.handoff = handoff
    return listener
