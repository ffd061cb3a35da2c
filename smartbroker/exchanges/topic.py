"""Topic exchange: a trie of binding-key words, walked once per publish.

Semantics are RabbitMQ's: words are split on ``.``; an empty key has zero words (so only
the empty binding key and ``#`` match it) and empty words are real words (``a..b`` has three);
``*`` matches exactly one word and ``#`` zero or more, anywhere in the key. Routing cost is
O(words x live trie nodes), independent of the number of bindings, and iterative: the trie is
walked as an NFA (a set of live nodes per word), so neither a 255-word key nor a binding key
made of many ``#`` can recurse deeply or explode.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import ClassVar

from smartbroker.exchanges.base import RefCounted, Table


def split_words(key: str) -> list[str]:
    return key.split(".") if key else []


class _Node:
    __slots__ = ("children", "star", "hash", "dests", "is_hash")

    def __init__(self, is_hash: bool = False) -> None:
        self.is_hash = is_hash  # reached by a ``#`` word: matches any number of words
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
                node.hash = node.hash or _Node(is_hash=True)
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
        """Walk the trie as an NFA over the words: one set of live nodes per position, no
        recursion, so a 255-word key or a binding key of many ``#`` costs O(words x live
        nodes), never a deep stack or exponential time."""
        root = self._root
        live = _with_hashes((root,)) if root.hash is not None else {root}
        for word in split_words(routing_key):
            step: set[_Node] = set()
            for node in live:
                if node.is_hash:  # ``#`` takes one more word and stays
                    step.add(node)
                child = node.children.get(word)
                if child is not None:
                    step.add(child)
                if node.star is not None:
                    step.add(node.star)
            if not step:
                return ()
            live = _with_hashes(step)
        out: set[Hashable] = set()
        for node in live:
            if node.dests:
                out.update(node.dests.counts)
        return out


def _with_hashes(nodes: Iterable[_Node]) -> set[_Node]:
    """The nodes plus every ``#`` node reachable from them by matching zero words."""
    live = set(nodes)
    todo = [node.hash for node in live if node.hash is not None]
    while todo:
        node = todo.pop()
        if node not in live:
            live.add(node)
            if node.hash is not None:
                todo.append(node.hash)
    return live
