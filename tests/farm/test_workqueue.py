"""The farm feeding one Work Queue manager: a signed commit turns every node's pilots into the
Work Queue example's, pointed at a manager in the hub; the tasks submitted to the manager run
on pilots of every node and each completes exactly once; then the site's usual configuration
comes back on every node.

The manager is the example's (``examples/workqueue/manager.py``), started for this test alone
in the hub's network namespace; the pilots run the example's self-contained image (worker and
libraries inside, no bind from the node), as :func:`tests.farm.farm.workqueue_pilots` says.
"""

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.farm.conftest import FIGURES
from tests.farm.farm import Farm, workqueue_pilots
from tests.farm.node import Node
from tests.farm.support import wait_until, workqueue_manager
from tests.farm.test_htcondor import PILOTS_PER_NODE

#: Tasks for each pilot of the farm: a node whose pilots start some seconds after the others'
#: still finds tasks waiting.
TASKS_PER_PILOT = 4
TASK_SECONDS = 4
#: A generous bound on the wait for every task, so that a broken farm fails instead of hanging.
TASKS_BOUND_SECONDS = 300


def tasks_for(farm: Farm) -> int:
    """Return how many tasks the manager submits: :data:`TASKS_PER_PILOT` for each pilot."""
    return TASKS_PER_PILOT * PILOTS_PER_NODE * len(farm.nodes)


@pytest.fixture
def manager(farm: Farm) -> Iterator[workqueue_manager.Manager]:
    """The Work Queue example's manager in the hub, with its tasks (:func:`tasks_for`);
    stopped by its pid afterwards."""
    started = farm.start_workqueue_manager(tasks_for(farm), TASK_SECONDS)
    yield started
    started.stop()


def test_tasks_run_on_pilots_of_every_node_and_each_completes_once(
    farm: Farm, manager: workqueue_manager.Manager, site_policy_restored: None
) -> None:
    port = manager.port()
    assert port is not None
    tasks = tasks_for(farm)
    committed = time.time()
    commit = farm.commit_config("Work Queue pilots for the hub's manager", **workqueue_pilots(farm.layout, port))
    for node, said in zip(farm.nodes, farm.on_every_node(Node.update), strict=True):
        assert f"updated to commit {commit[:12]}" in said, (node.name, said)

    try:
        wait_until(lambda: len(manager.done()) >= tasks, TASKS_BOUND_SECONDS, f"{tasks} tasks to complete")
    except pytest.fail.Exception as failure:
        pytest.fail(f"{failure}; the manager wrote:\n{manager.output()}")
    done = manager.done()
    FIGURES["tasks of the Work Queue manager: commit to the last one done, s"] = round(done[-1]["time"] - committed, 1)
    assert manager.exit_status(30) == 0, manager.output()  # every task returned the right output
    summary = manager.summary()
    assert summary is not None and summary["completed"] == summary["correct"] == tasks, summary
    # each task completed exactly once, with the right output
    assert Counter(event["tag"] for event in done) == {f"task-{index:04d}": 1 for index in range(tasks)}
    assert all(event["ok"] for event in done), [event for event in done if not event["ok"]]
    FIGURES["tasks of the Work Queue manager completed, each once"] = len(done)

    # every task ran in a pilot that a node's daemon started, and connected from that node
    workers = {event["worker"] for event in done}
    nodes = farm.nodes_of_pilots(sorted(workers))
    assert set(nodes) == workers, (workers, nodes)
    addresses = {node.number: node.address for node in farm.nodes}
    for event in done:
        assert event["address"].rpartition(":")[0] == addresses[nodes[event["worker"]]], event
    on_each_node = Counter(nodes[event["worker"]] for event in done)
    FIGURES["tasks of the Work Queue manager run on each node"] = {
        node.host_name: on_each_node[node.number] for node in farm.nodes
    }
    assert set(on_each_node) == {node.number for node in farm.nodes}, on_each_node
