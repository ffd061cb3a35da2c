"""Topic exchange: a trie of binding-key words, walked once per publish.

Semantics are RabbitMQ's: words are split on ``.``; an empty key has zero words (so only
the empty binding key and ``#`` match it) and empty words are real words (``a..b`` has three);
``*`` matches exactly one word and ``#`` zero or more, anywhere in the key. Routing cost is
O(words x wildcard branches) and independent of the number of bindings; a visited set keeps
keys like ``#.#.#`` from exploring the same (node, position) twice.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import ClassVar

from smartbroker.exchanges.base import RefCounted, Table


def split_words(key: str) -> list[str]:
    return key.split(".") if key else []


class _Node:
    __slots__ = ("children", "star", "hash", "dests")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.star: _Node | None = None
        self.hash: _Node | None = None
        self.dests = RefCounted()

    def is_empty(self) -> bool:
        return not (self.children or self.star or self.hash or self.dests)


class TopicExchange:
    type_name: ClassVar[str] = "topic"
    uses_headers: ClassVar[bool] = False

    def __init__(self) -> None:
        self._root = _Node()

    def validate_binding(self, routing_key: str, arguments: Table) -> None:
        return None

    def bind(self, destination: Hashable, routing_key: str, arguments: Table) -> None:
        node = self._root
        for word in split_words(routing_key):
            if word == "*":
                node.star = node.star or _Node()
                node = node.star
            elif word == "#":
                node.hash = node.hash or _Node()
                node = node.hash
            else:
                node = node.children.setdefault(word, _Node())
        node.dests.add(destination)

    def unbind(self, destination: Hashable, routing_key: str, arguments: Table) -> None:
        path: list[tuple[_Node, str]] = []
        node: _Node | None = self._root
        for word in split_words(routing_key):
            assert node is not None
            path.append((node, word))
            if word == "*":
                node = node.star
            elif word == "#":
                node = node.hash
            else:
                node = node.children.get(word)
            if node is None:
                return
        assert node is not None
        node.dests.remove(destination)
        for parent, word in reversed(path):  # prune empty branches
            child = parent.star if word == "*" else parent.hash if word == "#" else parent.children[word]
            if not child.is_empty():
                break
            if word == "*":
                parent.star = None
            elif word == "#":
                parent.hash = None
            else:
                del parent.children[word]

    def route(self, routing_key: str, headers: Table | None) -> Iterable[Hashable]:
        words = split_words(routing_key)
        n = len(words)
        out: set[Hashable] = set()
        seen: set[tuple[int, int]] = set()

        def walk(node: _Node, i: int) -> None:
            mark = (id(node), i)
            if mark in seen:
                return
            seen.add(mark)
            if node.hash is not None:
                for j in range(i, n + 1):
                    walk(node.hash, j)
            if i == n:
                out.update(node.dests.counts)
                return
            child = node.children.get(words[i])
            if child is not None:
                walk(child, i + 1)
            if node.star is not None:
                walk(node.star, i + 1)

        walk(self._root, 0)
        return out
