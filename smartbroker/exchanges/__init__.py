"""Exchange types, one module each, registered by name."""

from smartbroker.exchanges.base import ExchangeType
from smartbroker.exchanges.direct import DirectExchange
from smartbroker.exchanges.fanout import FanoutExchange
from smartbroker.exchanges.headers import HeadersExchange
from smartbroker.exchanges.topic import TopicExchange

EXCHANGE_TYPES: dict[str, type[ExchangeType]] = {
    cls.type_name: cls for cls in (DirectExchange, FanoutExchange, TopicExchange, HeadersExchange)
}

__all__ = ["EXCHANGE_TYPES", "ExchangeType"]
