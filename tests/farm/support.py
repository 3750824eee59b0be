"""The suite's shared helpers that the farm tier uses, imported here and only here, so that a
move of those helpers changes one place; and the tier's own wait."""

from collections.abc import Callable
from typing import TypeVar

import pytest

from tests.support import (
    htcondor_pool,
    logind_mock,
    prometheus_dashboard,
    prometheus_server,
    services,
    workqueue_manager,
)

__all__ = [
    "htcondor_pool",
    "logind_mock",
    "prometheus_dashboard",
    "prometheus_server",
    "services",
    "wait_until",
    "workqueue_manager",
]

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll every ``interval`` seconds until ``predicate`` returns something true and return it;
    fail the test after ``timeout`` seconds (a bound against hanging, not a measure)."""
    try:
        return services.poll(predicate, timeout, what, interval)
    except services.WaitTimeout as error:
        pytest.fail(str(error))
