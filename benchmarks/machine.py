"""What the machine is and how busy it is (from /proc): the context every result file
records, and the CPU accounting of the broker processes."""

from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
import time
from pathlib import Path


def read_cpu_times() -> tuple[int, int, int]:
    """(busy, idle, steal) jiffies summed over all CPUs."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = f
    return user + nice + system + irq + softirq, idle + iowait, steal


def busy_pct(interval: float = 1.0) -> tuple[float, float]:
    """Machine busy and steal time over `interval`, as % of one core."""
    b0, _, s0 = read_cpu_times()
    time.sleep(interval)
    b1, _, s1 = read_cpu_times()
    hz = os.sysconf("SC_CLK_TCK")
    return 100 * (b1 - b0) / hz / interval, 100 * (s1 - s0) / hz / interval


def loadavg() -> list[float]:
    with open("/proc/loadavg") as fh:
        return [float(x) for x in fh.read().split()[:3]]


def machine_info() -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    osname = ""
    try:
        with open("/etc/os-release") as fh:
            for line in fh:
                if line.startswith("PRETTY_NAME="):
                    osname = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            mem = fh.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "kernel": platform.release(),
            "os": osname, "memory": mem, "python": platform.python_version(),
            "hostname": socket.gethostname()}


def proc_cpu_s(pids: list[int]) -> float | None:
    """utime + stime of the given processes (all threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                rest = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += int(rest[11]) + int(rest[12])
    return total / os.sysconf("SC_CLK_TCK")


def descendants(pids: list[int]) -> list[int]:
    """The pids plus every process below them (pre-forked workers and the like)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            rest = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(rest[1]), []).append(int(d.name))
    seen, todo = [], list(pids)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.append(p)
            todo.extend(children.get(p, []))
    return sorted(seen)


def find_broker_pids(host: str, port: int) -> list[int]:
    """Processes listening on `port` (only for a broker on this machine)."""
    local = host in ("localhost", "::1", "") or host.startswith("127.")
    if not local:
        try:
            local = socket.gethostbyname(host).startswith("127.")
        except OSError:
            local = False
    if not local:
        return []
    try:
        out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    pids = sorted({int(p) for p in re.findall(r"pid=(\d+)", out)})
    return descendants(pids) if pids else []
