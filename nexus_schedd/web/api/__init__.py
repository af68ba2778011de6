"""The JSON API of ``nexus-schedweb`` under ``/api/v1`` (SPEC section 13).

Another client of the control socket: routes, tokens and problem details in
:mod:`.routes` and :mod:`.problems`, the OpenAPI document in :mod:`.openapi`,
durable ``Idempotency-Key`` handling in :mod:`.idempotency`, Server-Sent Events
in :mod:`.events`, and the ``[api]`` config table in :mod:`.config`.
"""

from __future__ import annotations

from nexus_schedd.web.api.config import ApiConfig, ApiToken
from nexus_schedd.web.api.routes import OPERATIONS, Api

__all__ = ["OPERATIONS", "Api", "ApiConfig", "ApiToken"]
