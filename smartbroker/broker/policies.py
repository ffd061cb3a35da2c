"""Policies: regex-matched settings applied live to queues (and exchanges), as RabbitMQ.

Only the matching policy with the highest priority applies to an object (ties broken by
name); queue arguments still win over policy keys. Policies that RabbitMQ refuses (max-priority, single-active-consumer) are
refused here too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from smartbroker.queues.arguments import LEADER_LOCATORS
from smartbroker.queues.settings import POLICY_KEYS, POLICY_REFUSED
from smartbroker.queues.stream_args import STREAM_POLICY_KEYS, policy_key_error

EXCHANGE_KEYS = {"alternate-exchange"}
LOCATOR_KEYS = {"queue-leader-locator"}  # where a new queue's leader goes (cluster/placement.py)
INTEGER_KEYS = ("message-ttl", "expires", "max-length", "max-length-bytes", "delivery-limit",
                "max-in-memory-length", "max-in-memory-bytes")
APPLY_TO = ("queues", "exchanges", "all", "classic_queues", "quorum_queues", "streams")


class PolicyError(ValueError):
    """A policy definition RabbitMQ would refuse; the message says why."""


@dataclass
class Policy:
    name: str
    pattern: str
    definition: dict[str, Any]
    priority: int = 0
    apply_to: str = "all"
    vhost: str = "/"
    regex: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self.regex = re.compile(self.pattern)
        except re.error as exc:
            raise PolicyError(f"invalid pattern '{self.pattern}': {exc}") from None
        if self.apply_to not in APPLY_TO:
            raise PolicyError(f"invalid apply-to '{self.apply_to}'; expected one of {', '.join(APPLY_TO)}")
        validate_definition(self.definition)

    def matches(self, name: str, kind: str) -> bool:
        if self.apply_to == "exchanges" and kind != "exchange":
            return False
        if self.apply_to not in ("all", "exchanges") and kind != "queue":
            return False
        return self.regex.search(name) is not None

    def as_json(self) -> dict[str, Any]:
        return {"vhost": self.vhost, "name": self.name, "pattern": self.pattern,
                "apply-to": self.apply_to, "definition": self.definition, "priority": self.priority}


def validate_definition(definition: Mapping[str, Any]) -> None:
    if not definition:
        raise PolicyError("policy definition is empty")
    for key, value in definition.items():
        if key in POLICY_REFUSED:
            raise PolicyError(f"'{key}' cannot be set by a policy (RabbitMQ refuses it too); "
                              f"use the queue argument '{POLICY_REFUSED[key]}'")
        if key in LOCATOR_KEYS and value not in LEADER_LOCATORS:
            raise PolicyError(f"{value!r} is not a valid queue leader locator value")
        if key not in POLICY_KEYS and key not in EXCHANGE_KEYS and key not in STREAM_POLICY_KEYS \
                and key not in LOCATOR_KEYS:
            raise PolicyError(f"'{key}' is not a recognised policy key; supported: "
                              f"{', '.join(sorted({*POLICY_KEYS, *EXCHANGE_KEYS, *STREAM_POLICY_KEYS, *LOCATOR_KEYS}))}")
        if (why := policy_key_error(key, value)) is not None:
            raise PolicyError(why)
        minimum = 1 if key == "expires" else 0
        if key in INTEGER_KEYS and (not isinstance(value, int) or isinstance(value, bool)
                                    or value < minimum):
            raise PolicyError(f"'{key}' must be an integer >= {minimum}, got {value!r}")
        if key == "dead-letter-strategy" and value not in ("at-most-once", "at-least-once"):
            raise PolicyError(f"{value!r} is not a valid dead letter strategy")
        if key == "overflow" and value not in ("drop-head", "reject-publish", "reject-publish-dlx"):
            raise PolicyError(f"'overflow' must be drop-head, reject-publish or reject-publish-dlx, got {value!r}")
        if key in ("dead-letter-exchange", "dead-letter-routing-key", "alternate-exchange") and not isinstance(value, str):
            raise PolicyError(f"'{key}' must be a string, got {value!r}")


def effective_policy(policies: Mapping[str, Policy], name: str, kind: str) -> Policy | None:
    best: Policy | None = None
    for policy in policies.values():
        if policy.matches(name, kind) and (best is None or policy.priority > best.priority
                                           or (policy.priority == best.priority and policy.name > best.name)):
            best = policy
    return best
