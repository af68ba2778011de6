"""Schemathesis against the live API (a real ``nexus-schedweb`` on the folder's
real daemon): generated requests for every operation of the route table, a
bounded number each, valid and invalid, must get no server error and no reply
that breaks the OpenAPI document.

Driven through schemathesis' Python API and Hypothesis (its pytest plugin does
not support the pytest this project uses), one test per operation.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from nexus_schedd.web.api import OPERATIONS
from nexus_schedd.web.api.table import Operation
from tests.web.conftest import ADMIN_TOKEN, SchedulerData, api_config_text, bearer
from tests.web.web_process import WebProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MAX_EXAMPLES = 10
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# An event stream never ends; it has its own tests (test_api_process.py).
# Negative cases need something to break: parameters or a body.
FUZZED = [
    (operation, mode)
    for operation in OPERATIONS
    if operation.path != "/events"
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or operation.query or operation.path_params or operation.body
]


@pytest.fixture(scope="module")
def live_api(
    scheduler: SchedulerData, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebProcess]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    process = WebProcess(tmp, scheduler.socket, api_config_text(tmp / "idempotency.db"))
    process.start()
    yield process
    process.close()


@pytest.fixture(scope="module")
def api_schema(live_api: WebProcess) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_url(f"{live_api.url}/api/v1/openapi.json")


@pytest.mark.parametrize(
    ("operation", "mode"),
    FUZZED,
    ids=[f"{op.method} {op.path} {mode.value}" for op, mode in FUZZED],
)
def test_the_live_api_keeps_to_its_openapi_document(
    api_schema: schemathesis.schemas.BaseSchema,
    live_api: WebProcess,
    operation: Operation,
    mode: GenerationMode,
) -> None:
    method, path = operation.method, f"/api/v1{operation.path}"
    described = api_schema[path][method]

    @given(case=described.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(
            base_url=live_api.url,
            headers=bearer(ADMIN_TOKEN),
            checks=CHECKS,
            timeout=30,
        )

    check()
