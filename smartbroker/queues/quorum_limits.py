"""``x-overflow: reject-publish`` as rabbit_fifo (RabbitMQ 3.10) runs it, which a client sees
differently from a classic queue: the publish that takes the queue past its limit is still
accepted, and from then on publishes are refused until the ready messages are down to 80 %
of the limit (``?LOW_LIMIT``), not just below it. The counts are the ready messages plus
those waiting for at-least-once dead-lettering (rabbit_fifo's ``is_over_limit`` adds
``rabbit_fifo_dlx:stat``): quorum.py passes them."""

from __future__ import annotations

from dataclasses import dataclass, replace

from smartbroker.queues.settings import QueueSettings

LOW_LIMIT = 0.8


@dataclass(slots=True)
class RejectPublish:
    max_length: int | None
    max_bytes: int | None
    blocked: bool = False

    @classmethod
    def split(cls, settings: QueueSettings, old: RejectPublish | None) -> tuple[QueueSettings, RejectPublish | None]:
        """The settings a classic queue applies (without reject-publish limits, kept here
        instead), and these limits (None: not reject-publish, or no limit)."""
        if settings.overflow != "reject-publish" or not settings.has_limits:
            return settings, None
        limits = cls(settings.max_length, settings.max_length_bytes,
                     old.blocked if old is not None else False)
        return replace(settings, max_length=None, max_length_bytes=None), limits

    def refuses(self, count: int, nbytes: int) -> bool:
        """Checked before a publish."""
        self.before_growth(count, nbytes)
        return self.blocked

    def before_growth(self, count: int, nbytes: int) -> None:
        """Being blocked ends once the queue is down to the low limit. Only publishes and
        requeues make it longer, so checking before each of them sees every low point."""
        if self.blocked and self._below_low_limit(count, nbytes):
            self.blocked = False

    def published(self, count: int, nbytes: int) -> None:
        """After an accepted publish: past a limit now blocks the following ones."""
        if ((self.max_length is not None and count > self.max_length)
                or (self.max_bytes is not None and nbytes > self.max_bytes)):
            self.blocked = True

    def _below_low_limit(self, count: int, nbytes: int) -> bool:
        return ((self.max_length is None or count <= int(self.max_length * LOW_LIMIT))
                and (self.max_bytes is None or nbytes <= int(self.max_bytes * LOW_LIMIT)))
