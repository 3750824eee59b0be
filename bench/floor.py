"""The engine's floor: the least Docker SDK code that keeps a pool of fresh containers.

:func:`create_and_start` is what any tool must do for a fresh container; :func:`replace_forever`
is the minimal replacer that the refill benchmark holds Plancton against: it waits for a
``die`` event, removes that container, and creates and starts a new one. Run as a process of
its own, like the daemon, on the engine of ``DOCKER_HOST`` (the same code serves Docker and
Podman): ``python -m bench.floor CONTAINER_JSON COUNT``.
"""

import contextlib
import json
import sys
from typing import Any

import docker


def create_and_start(api: docker.APIClient, container: dict[str, Any], **host_options: Any) -> str:
    """Given a client and a container (image, command, user, labels, host_config), create and
    start it; return its id. ``host_options`` add to its host configuration.
    """
    host_config = api.create_host_config(**container["host_config"], **host_options)
    created = api.create_container(
        image=container["image"],
        command=container["command"],
        user=container["user"],
        labels=container["labels"],
        host_config=host_config,
    )
    api.start(created["Id"])
    return str(created["Id"])


def replace_forever(api: docker.APIClient, container: dict[str, Any], count: int) -> None:
    """Start ``count`` containers, then replace each one that dies by a fresh one, forever.

    Podman 4's filter matches its own name of the event (``died``), so both are asked for; and
    only events of the container's labels count, whether or not the engine filtered them. Each
    container is replaced once, and one already gone is fine: Podman may report a death twice,
    the second time after the first removal.
    """
    labels = container["labels"]
    label_filter = [f"{key}={value}" for key, value in labels.items()]
    filters = {"type": ["container"], "event": ["die", "died"], "label": label_filter}
    events = api.events(decode=True, filters=filters)
    for _ in range(count):
        create_and_start(api, container)
    replaced: set[str] = set()
    for event in events:
        actor = event.get("Actor") or {}
        dead = str(actor.get("ID") or event["id"])
        if dead in replaced or any((actor.get("Attributes") or {}).get(key) != value for key, value in labels.items()):
            continue
        replaced.add(dead)
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_container(dead, force=True)
        create_and_start(api, container)


def main(argv: list[str]) -> int:
    """Run the replacer with the container description and pool size on the command line."""
    container, count = json.loads(argv[0]), int(argv[1])
    # the engine of DOCKER_HOST (the benchmark's, Docker's or Podman's), or the Docker socket
    replace_forever(docker.APIClient(version="auto", **docker.utils.kwargs_from_env()), container, count)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
