"""The ``smartbroker`` command line: ``app`` is the console script's entry point
(``smartbroker = "smartbroker.cli:app"``); ``main`` holds ``serve``/``version`` and
registers the command groups from the sibling modules."""

from smartbroker.cli.main import app

__all__ = ["app"]
