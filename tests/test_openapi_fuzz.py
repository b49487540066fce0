"""Property-based requests from the OpenAPI schema against the in-process app: never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans

from codeactions.config import AuthSettings, DatabaseSettings, RunnerSettings, Settings
from codeactions.main import create_app
from tests.conftest import ADMIN, ADMIN_TOKEN

# Requests per run, shared by every operation and generation mode, so the run stays bounded
# (well under a minute) as routes are added; each still gets a few examples.
REQUEST_BUDGET = 1200
MIN_EXAMPLES, MAX_EXAMPLES = 5, 20


@pytest.fixture
def api_schema(sqlite_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    app = create_app(
        Settings(
            database=DatabaseSettings(url=sqlite_url),
            auth=AuthSettings(token=ADMIN_TOKEN),
            runner=RunnerSettings(enabled=False, work_dir=str(tmp_path_factory.mktemp("runner"))),
        )
    )
    # Schemathesis runs the app and its lifespan on its own event-loop thread.
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    shutdown_lifespans()


def can_be_invalid(operation: Any) -> bool:
    """Whether negative generation has anything to break: a body, or a constrained parameter.

    Searching for an invalid value of a free-form string (say `/code/{id}`) is bound to fail
    after hundreds of tries, which would only cost time; those are sent in positive mode.
    """

    def free_string(schema: dict[str, Any]) -> bool:
        meaningful = {k: v for k, v in schema.items() if k not in ("title", "description")}
        return meaningful == {"type": "string"}

    return bool(operation.body) or any(
        not free_string(parameter.definition.get("schema", {}))
        for parameter in operation.iter_parameters()
    )


def fuzz(operation: Any, mode: GenerationMode, examples: int) -> None:
    # No shrinking: the first failing request is reported as is, which keeps the run bounded.
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
        database=None,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        try:
            case.call_and_validate(headers=ADMIN, checks=[not_a_server_error])
        except Exception as exc:
            raise AssertionError(f"{exc}\n{case.as_curl_command(headers=ADMIN)}") from exc

    run()


def test_no_generated_request_makes_the_server_fail(api_schema: Any) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert operations, "the schema lists no operation"
    runs = [(operation, GenerationMode.POSITIVE) for operation in operations] + [
        (operation, GenerationMode.NEGATIVE)
        for operation in operations
        if can_be_invalid(operation)
    ]
    examples = max(MIN_EXAMPLES, min(MAX_EXAMPLES, REQUEST_BUDGET // len(runs)))
    failures: list[str] = []
    for operation, mode in runs:
        try:
            fuzz(operation, mode, examples)
        except Unsatisfiable:
            pass  # nothing in it can be made invalid: nothing to send
        except Exception as exc:
            failures.append(f"{operation.label} ({mode}): {exc}")
    assert failures == [], "\n\n".join(failures)
