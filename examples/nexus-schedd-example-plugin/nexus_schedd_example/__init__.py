"""An example nexus-schedd plugin: a handler for the ``greet`` job type."""

from __future__ import annotations

from nexus_schedd_example.handler import GreetHandler, make_handler

__all__ = ["GreetHandler", "make_handler"]
