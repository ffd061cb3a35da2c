"""Request bodies, with RabbitMQ's field names and defaults (unknown fields are ignored,
as RabbitMQ ignores e.g. ``node``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from smartbroker.management.names import check_numbers


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _bounded_numbers(cls, data: Any) -> Any:
        """Every request body: no integer wider than AMQP's 64 bits, no inf/NaN."""
        check_numbers(data)
        return data


class QueueBody(Body):
    durable: bool = False
    auto_delete: bool = False
    arguments: dict[str, Any] = Field(default_factory=dict)


class ExchangeBody(Body):
    type: str = "direct"
    durable: bool = False
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = Field(default_factory=dict)


class BindingBody(Body):
    routing_key: str = ""
    arguments: dict[str, Any] = Field(default_factory=dict)


class PublishBody(Body):
    properties: dict[str, Any]
    routing_key: str
    payload: str
    payload_encoding: Literal["string", "base64"] = "string"


class GetBody(Body):
    count: int = Field(ge=0)
    ackmode: Literal["ack_requeue_true", "ack_requeue_false", "reject_requeue_true",
                     "reject_requeue_false"]
    encoding: Literal["auto", "base64"]
    truncate: int | None = None


class UserBody(Body):
    password: str | None = None
    password_hash: str | None = None
    hashing_algorithm: str | None = None
    tags: str | list[str] = ""


class VhostBody(Body):
    description: str = ""
    tags: str | list[str] = ""
    default_queue_type: str = "classic"
    tracing: bool = False


def _regex(value: str) -> str:
    """Compiled now, so an invalid pattern is a 400 and never stored."""
    from smartbroker.broker.permissions import InvalidRegex, compile_regex
    from smartbroker.management.errors import invalid_regex

    try:
        compile_regex(value)
    except InvalidRegex as exc:  # not a ValueError out of here: RabbitMQ's reason, as is
        raise invalid_regex(exc) from None
    return value


class PermissionBody(Body):
    configure: str
    write: str
    read: str

    @field_validator("configure", "write", "read", mode="after")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return _regex(value)


class TopicPermissionBody(Body):
    exchange: str
    write: str = ".*"
    read: str = ".*"

    @field_validator("write", "read", mode="after")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return _regex(value)


class PublishResult(BaseModel):
    routed: bool


class Status(BaseModel):
    status: str


class WhoAmI(BaseModel):
    name: str
    tags: list[str]


def split_tags(tags: str | list[str]) -> list[str]:
    if isinstance(tags, list):
        return [t.strip() for t in tags if t.strip()]
    return [t.strip() for t in tags.split(",") if t.strip()]
