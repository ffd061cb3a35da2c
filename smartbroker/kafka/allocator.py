"""glibc's malloc thresholds, set once when the Kafka listener starts.

Kafka traffic allocates and frees buffers of 1-2 MB per request: Produce records (librdkafka
and the Java client batch up to ~1 MB) and Fetch responses (up to 1 MiB per partition).
glibc serves blocks over its mmap threshold (128 KiB, raised only as large blocks happen to
be freed) with fresh mmap pages, faulted in page by page: a 200k x 1 KiB consume measured
100k-240k minor faults and twice the broker CPU when nothing had raised the threshold
before, 3-30 faults with these settings. Fixed thresholds make that independent of what
the process happened to free first. The cost is memory glibc keeps instead of returning
at once: at most TRIM bytes free at the heap's top.

Environment settings win (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``), and
a libc without ``mallopt`` (not glibc) is left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

MMAP_THRESHOLD = 4 * 1024 * 1024  # blocks up to this come from the heap, reused
TRIM_THRESHOLD = 16 * 1024 * 1024  # free heap top kept before returning it to the OS
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
log = logging.getLogger(__name__)
_done = False


def tune() -> bool:
    """Set the thresholds (once per process); whether they were set."""
    global _done
    if _done:
        return True
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
        gnu = libc.gnu_get_libc_version  # glibc only: musl's mallopt does nothing
    except (OSError, AttributeError):
        return False
    del gnu
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not _done:
        log.debug("mallopt refused the Kafka buffer thresholds")
    return _done
