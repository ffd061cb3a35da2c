"""The process's descriptor limit, raised from its soft value to its hard one at start.

Every connection, segment file and fsync'd directory is a descriptor. Login shells and
containers often give a soft limit of 1,024 under a hard limit of hundreds of thousands:
the broker would then cap its open segment files at 256 (``store/handles.py`` takes a
quarter) and refuse connections long before the machine is short of anything. Go's
runtime raises the soft limit the same way at start; RabbitMQ asks operators to. The soft
limit is what a process may raise by itself, so this needs no privilege."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("smartbroker")
CEILING = 1 << 20  # an "unlimited" hard limit is not taken at its word


def raise_to_hard() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard one (at most ``CEILING``); returns
    the soft limit in force afterwards. A refusal leaves the limit as it was."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = CEILING if hard == resource.RLIM_INFINITY else min(hard, CEILING)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("descriptor limit left at %d (raising it to %d failed: %s)",
                        soft, target, exc)
            return soft
        return target
    return soft
