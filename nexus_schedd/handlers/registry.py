"""The handler registry: which loaded handler runs which job type."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nexus_schedd.errors import UnknownJobType
from nexus_schedd.handlers.base import Handler


class HandlerRegistry:
    """Loaded handlers by name, and the answer to "who runs this job type?".

    ``resolve`` asks each handler's ``supports()`` in mapping order and caches the
    answer per job type, so the dispatch path pays for the lookup once per type.
    ``broken`` names plugins that failed to load (name -> error), for ListHandlers.
    """

    def __init__(
        self, handlers: Mapping[str, Handler], *, broken: Mapping[str, str] | None = None
    ) -> None:
        self._handlers = dict(handlers)
        self.broken: Mapping[str, str] = dict(broken or {})
        self._by_type: dict[str, Handler | None] = {}

    def resolve(self, job_type: str) -> Handler | None:
        """The first handler that supports ``job_type``, or None."""
        try:
            return self._by_type[job_type]
        except KeyError:
            pass
        found = next((h for h in self._handlers.values() if h.supports(job_type)), None)
        self._by_type[job_type] = found
        return found

    def supports(self, job_type: str) -> bool:
        """True if some loaded handler runs ``job_type``."""
        return self.resolve(job_type) is not None

    def check_job(self, job_type: str, payload: Mapping[str, Any]) -> None:
        """Refuse a job no loaded handler can take: UnknownJobType if none supports
        ``job_type``, InvalidSpec (naming the field) if its handler's optional
        ``validate`` refuses the payload."""
        handler = self.resolve(job_type)
        if handler is None:
            raise UnknownJobType(job_type)
        # getattr, not isinstance(handler, ValidatingHandler): a runtime Protocol
        # check costs microseconds on every add of a batch.
        validate = getattr(handler, "validate", None)
        if validate is not None:
            validate(job_type, payload)

    def names(self) -> list[str]:
        """Names of the loaded handlers, in resolution order."""
        return list(self._handlers)

    def owns(self, handler: Handler | None) -> bool:
        """True if ``handler`` is one of this registry's loaded handlers."""
        return any(handler is loaded for loaded in self._handlers.values())

    async def aclose(self, keep: Sequence[HandlerRegistry] = ()) -> None:
        """Close every handler that holds resources (an ``aclose()`` method, like
        the http handler's connection pool or a queue handler's broker
        connection). Called when the registry is unloaded; a handler that one of
        ``keep`` (registries still loaded) also holds stays open."""
        for handler in self._handlers.values():
            close = getattr(handler, "aclose", None)
            if close is not None and not any(other.owns(handler) for other in keep):
                await close()

    def __repr__(self) -> str:
        return f"HandlerRegistry(handlers={self.names()!r}, broken={sorted(self.broken)!r})"
