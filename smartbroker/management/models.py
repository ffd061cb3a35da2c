"""Request bodies, with RabbitMQ's field names and defaults (unknown fields are ignored,
as RabbitMQ ignores e.g. ``node``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


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


class PermissionBody(Body):
    configure: str
    write: str
    read: str


class TopicPermissionBody(Body):
    exchange: str
    write: str = ".*"
    read: str = ".*"


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
