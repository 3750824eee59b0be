"""The engine a benchmark run talks to: a client of its API, and the label of the containers
the benchmark makes itself."""

import docker

from tests.support import services

API_TIMEOUT_SECONDS = 120
#: Every container the benchmark makes itself (baselines) carries this label with the run's id.
BENCH_LABEL = "org.plancton.bench"


def docker_api(url: str = f"unix://{services.DOCKER_SOCKET}") -> docker.APIClient:
    """Return a low-level Docker client on an engine (the local Docker Engine by default)."""
    return docker.APIClient(base_url=url, version="auto", timeout=API_TIMEOUT_SECONDS)
