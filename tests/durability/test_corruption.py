"""Damaged message store files: the broker starts, says what it skipped, loses only that.

The files are changed while the broker is stopped. Frames are located with a small parser
written from the documented format (smartbroker/store/README.md), not with the store's
own code: ``magic "\\xa7SB1" | body_len u32 | crc32 u32 | body``, the body starting with
``base_offset u64 | timestamp i64 | flags u8 | count u32`` and then, per record,
``key_len i32 | payload_len u32 | key | payload``.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.extension

MAGIC = b"\xa7SB1"
PREFIX = struct.Struct("<4sII")
HEAD = struct.Struct("<QqBI")
ENTRY = struct.Struct("<iI")
SUMMARY = re.compile(r"recovered (\d+) message\(s\) in (\d+) queue\(s\); skipped (\d+) damaged "
                     r"record\(s\), truncated (\d+) torn byte\(s\)")


@dataclass
class Frame:
    path: Path
    pos: int  # where the frame starts in its file
    size: int  # prefix + body
    offset: int  # first record offset
    payloads: list[bytes]

    @property
    def end(self) -> int:
        return self.pos + self.size


def frames(path: Path) -> list[Frame]:
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        magic, length, _crc = PREFIX.unpack_from(data, pos)
        assert magic == MAGIC, f"{path.name}: no frame at {pos}"
        body = pos + PREFIX.size
        offset, _ts, _flags, count = HEAD.unpack_from(data, body)
        p, payloads = body + HEAD.size, []
        for _ in range(count):
            klen, plen = ENTRY.unpack_from(data, p)
            p += ENTRY.size + max(klen, 0)
            payloads.append(data[p:p + plen])
            p += plen
        out.append(Frame(path, pos, PREFIX.size + length, offset, payloads))
        pos += PREFIX.size + length
    return out


def segment_files(sb) -> list[Path]:
    return sorted(sb.messages_dir.glob("*.log"))


def frame_of(sb, body: bytes) -> Frame:
    """The enqueue record (``E``) whose message body is ``body``."""
    found = [f for seg in segment_files(sb) for f in frames(seg)
             if f.payloads[0][:1] == b"E" and f.payloads[0].endswith(body)]
    assert len(found) == 1, f"{len(found)} frames hold {body[:20]!r}"
    return found[0]


def flip(path: Path, pos: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(pos)
        old = fh.read(1)
        fh.seek(pos)
        fh.write(bytes([old[0] ^ 0x5A]))


def summary(text: str) -> tuple[int, int, int, int]:
    found = SUMMARY.findall(text)
    assert found, f"no recovery summary in the log:\n{text}"
    return tuple(int(x) for x in found[-1])


def bodies(n: int, size: int = 1000) -> list[bytes]:
    return [(b"msg-%03d:" % i) + bytes([65 + i % 26]) * (size - 8) for i in range(n)]


def fill(sb, queue: str, msgs: list[bytes]) -> None:
    sb.declare(queue)
    sb.publish(queue, msgs)
    sb.stop()


def restart_and_drain(sb, queue: str) -> tuple[list[bytes], str]:
    mark = sb.log_mark()
    sb.start()
    got = [m.body for m in sb.drain(queue)]
    return got, sb.log_since(mark)


def test_torn_tail_is_cut(sb, qname: str) -> None:
    """A write torn by a crash: the last record is half there. It is cut off; the rest is
    served, and new messages append cleanly after the cut."""
    msgs = bodies(10)
    fill(sb, qname, msgs)
    last = frame_of(sb, msgs[-1])
    assert last.end == last.path.stat().st_size  # the tail record of the tail segment
    cut_at = last.pos + last.size // 2
    with open(last.path, "r+b") as fh:
        fh.truncate(cut_at)

    got, log = restart_and_drain(sb, qname)

    assert got == msgs[:-1]
    assert f"truncating {cut_at - last.pos} torn bytes at the tail of {last.path}" in log
    assert summary(log) == (9, 1, 0, cut_at - last.pos)
    sb.publish(qname, [b"after-the-cut"])
    sb.restart()
    assert [m.body for m in sb.drain(qname)] == [b"after-the-cut"]


@pytest.mark.parametrize("where", ["payload", "crc", "length", "magic"])
def test_flipped_byte_loses_only_that_record(sb, qname: str, where: str) -> None:
    msgs = bodies(10)
    fill(sb, qname, msgs)
    victim = frame_of(sb, msgs[4])
    pos = {"payload": victim.end - 300, "crc": victim.pos + 8,
           "length": victim.pos + 6, "magic": victim.pos + 1}[where]
    flip(victim.path, pos)

    got, log = restart_and_drain(sb, qname)

    assert got == msgs[:4] + msgs[5:]
    assert f"bad record at {victim.path}:{victim.pos}, skipping it" in log
    assert summary(log) == (9, 1, 1, 0)


def test_several_damaged_records(sb, qname: str) -> None:
    """Three separate flips, one of them in the first record: three messages lost, no more."""
    msgs = bodies(20)
    fill(sb, qname, msgs)
    for i in (0, 7, 15):
        victim = frame_of(sb, msgs[i])
        flip(victim.path, victim.pos + victim.size // 2)

    got, log = restart_and_drain(sb, qname)

    assert got == [m for i, m in enumerate(msgs) if i not in (0, 7, 15)]
    assert log.count("bad record at") == 3
    assert summary(log) == (17, 1, 3, 0)


def test_deleted_index_is_rebuilt(sb, qname: str) -> None:
    msgs = bodies(30)
    fill(sb, qname, msgs)
    indexes = list(sb.messages_dir.glob("*.idx"))
    assert indexes, "a graceful stop saves the segment index"
    for idx in indexes:
        idx.unlink()

    got, log = restart_and_drain(sb, qname)

    assert got == msgs
    assert summary(log) == (30, 1, 0, 0)


def test_damaged_index_is_rebuilt(sb, qname: str) -> None:
    msgs = bodies(30)
    fill(sb, qname, msgs)
    (idx,) = sb.messages_dir.glob("*.idx")
    flip(idx, idx.stat().st_size // 2)

    got, log = restart_and_drain(sb, qname)

    assert got == msgs
    assert f"index {idx} is stale or damaged; rebuilding" in log
    assert summary(log) == (30, 1, 0, 0)


def test_damage_after_kill(sb, qname: str) -> None:
    """Damage on top of a crash (no index saved for the active segment, settlement records
    in the log): an ack still holds, only the damaged message is lost."""
    msgs = bodies(10)
    sb.declare(qname)
    sb.publish(qname, msgs)
    conn = sb.connect()
    ch = conn.channel()
    method, _props, body = ch.basic_get(qname)
    assert body == msgs[0]
    ch.basic_ack(method.delivery_tag)
    conn.close()
    sb.publish(qname, [b"after-ack"])  # confirmed: the ack before it is on disk
    sb.kill()
    victim = frame_of(sb, msgs[5])
    flip(victim.path, victim.end - 10)

    got, log = restart_and_drain(sb, qname)

    assert got == msgs[1:5] + msgs[6:] + [b"after-ack"]
    assert summary(log) == (9, 1, 1, 0)


def test_several_segments(sb, qname: str) -> None:
    """Past the 64 MiB segment size: a damaged record and a lost index in the closed
    segment, a torn tail in the active one. Exactly the two damaged messages are lost."""
    big = [(b"big-%03d:" % i) + bytes([97 + i % 26]) * ((1 << 20) - 8) for i in range(72)]
    fill(sb, qname, big)
    segs = segment_files(sb)
    assert len(segs) == 2, [s.name for s in segs]
    closed, active = segs
    victim = frame_of(sb, big[10])
    assert victim.path == closed
    flip(closed, victim.pos + victim.size // 2)
    closed.with_suffix(".idx").unlink()
    tail = frame_of(sb, big[-1])
    assert tail.path == active and tail.end == active.stat().st_size
    with open(active, "r+b") as fh:
        fh.truncate(tail.pos + 100)

    got, log = restart_and_drain(sb, qname)

    assert len(got) == 70
    assert got == big[:10] + big[11:-1]
    assert f"bad record at {closed}:{victim.pos}, skipping it" in log
    assert f"truncating 100 torn bytes at the tail of {active}" in log
    assert summary(log) == (70, 1, 1, 100)
