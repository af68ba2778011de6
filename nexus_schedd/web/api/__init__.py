"""The JSON API of ``nexus-schedweb`` under ``/api/v1`` (SPEC section 13).

Another client of the control socket: the route table in :mod:`.table`, its server
(tokens, bodies, idempotency) in :mod:`.routes`, problem details in :mod:`.problems`, daemon
connections in :mod:`.pool`, the OpenAPI document in :mod:`.openapi`,
durable ``Idempotency-Key`` handling in :mod:`.idempotency`, Server-Sent Events
in :mod:`.events`, and the ``[api]`` config table in :mod:`.config`.
"""

from __future__ import annotations

from nexus_schedd.web.api.config import ApiConfig, ApiToken
from nexus_schedd.web.api.routes import Api
from nexus_schedd.web.api.table import OPERATIONS

__all__ = ["OPERATIONS", "Api", "ApiConfig", "ApiToken"]
