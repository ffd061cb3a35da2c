"""AMQP exceptions as RabbitMQ raises them.

A ``ChannelError`` closes one channel (``channel.close``); a ``ConnectionError`` closes the
whole connection (``connection.close``). Both carry the reply code and the class/method ids
of the method that caused them, so the reply can name the offending method.
"""

from __future__ import annotations

REPLY_NAMES = {
    200: "REPLY_SUCCESS",
    311: "CONTENT_TOO_LARGE",
    312: "NO_ROUTE",
    313: "NO_CONSUMERS",
    320: "CONNECTION_FORCED",
    402: "INVALID_PATH",
    403: "ACCESS_REFUSED",
    404: "NOT_FOUND",
    405: "RESOURCE_LOCKED",
    406: "PRECONDITION_FAILED",
    501: "FRAME_ERROR",
    502: "SYNTAX_ERROR",
    503: "COMMAND_INVALID",
    504: "CHANNEL_ERROR",
    505: "UNEXPECTED_FRAME",
    506: "RESOURCE_ERROR",
    530: "NOT_ALLOWED",
    540: "NOT_IMPLEMENTED",
    541: "INTERNAL_ERROR",
}


class AMQPError(Exception):
    """Base of protocol-level errors; ``text`` is the human part after the code name."""

    soft = True

    def __init__(self, code: int, text: str, class_id: int = 0, method_id: int = 0) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.class_id = class_id
        self.method_id = method_id

    @property
    def reply_text(self) -> str:
        """RabbitMQ's format: ``NOT_FOUND - no queue 'q' in vhost '/'``."""
        text = f"{REPLY_NAMES.get(self.code, 'ERROR')} - {self.text}"
        if not text.isascii():  # names a client sent as bytes that are not UTF-8
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return text[:255]

    def at(self, class_id: int, method_id: int) -> AMQPError:
        """Attach the offending method's ids unless already set."""
        if not self.class_id:
            self.class_id, self.method_id = class_id, method_id
        return self


class ChannelError(AMQPError):
    """Soft error: the channel is closed, the connection lives on."""


class ConnectionError(AMQPError):  # noqa: A001 - AMQP's name for it
    """Hard error: the whole connection is closed."""

    soft = False


class MalformedFrame(ConnectionError):
    """A frame that cannot be parsed at all (RabbitMQ's ``rabbit_binary_parser``): the
    close names no method (class 0, method 0), whatever method the bytes claimed to be."""

    def at(self, class_id: int, method_id: int) -> AMQPError:
        return self


def not_found(text: str) -> ChannelError:
    return ChannelError(404, text)


def precondition_failed(text: str) -> ChannelError:
    return ChannelError(406, text)


def access_refused(text: str) -> ChannelError:
    return ChannelError(403, text)


def resource_locked(text: str) -> ChannelError:
    return ChannelError(405, text)


def command_invalid(text: str) -> ConnectionError:
    return ConnectionError(503, text)


def not_allowed(text: str) -> ConnectionError:
    return ConnectionError(530, text)


def frame_error(text: str) -> ConnectionError:
    return ConnectionError(501, text)


def unexpected_frame(text: str) -> ConnectionError:
    return ConnectionError(505, text)


def channel_error(text: str) -> ConnectionError:
    return ConnectionError(504, text)


def not_implemented(text: str) -> ConnectionError:
    return ConnectionError(540, text)
