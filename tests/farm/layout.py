"""Where everything of a farm goes: names and addresses, from a run's id and its number of nodes.

The farm network is a bridge in a hub network namespace of its own, which holds the farm's
services (git daemon, HTCondor's central manager); each node is a network namespace joined to
that bridge by a veth pair. Nothing of the farm is added to the host's own network namespace:
deleting the namespaces deletes every link and address the farm made.
"""

import ipaddress
import os
import re
from dataclasses import dataclass

#: The farm network, chosen to be unlikely to clash with anything (and private to the farm's
#: namespaces in any case): the hub is .1, node N is .(10 + N).
FARM_SUBNET = ipaddress.IPv4Network("10.213.0.0/24")
#: The nodes' engines' own bridges (docker0 in each node's namespace): 10.214.N.1/24.
ENGINE_SUBNETS = ipaddress.IPv4Network("10.214.0.0/16")
FIRST_NODE_HOST = 10
MAX_NODES = 200
NETNS_FOLDER = "/var/run/netns"
#: The bridge of the farm network, in the hub's namespace.
BRIDGE = "farm0"
#: A node's end of its veth pair, in its own namespace.
NODE_LINK = "eth0"
GIT_PORT = 9418
RUN_ID = re.compile(r"[0-9a-f]{6}")
#: Where a run's folder and ledger go (on disk: the engines' images are large).
FARM_PARENT = "/var/tmp"


def run_folder(run_id: str) -> str:
    """Return the folder that holds every file of run ``run_id``."""
    return os.path.join(FARM_PARENT, f"plfarm{run_id}")


def ledger_path(run_id: str) -> str:
    """Return the ledger file of run ``run_id`` (beside its folder, which the ledger removes)."""
    return f"{run_folder(run_id)}.ledger"


@dataclass(frozen=True)
class FarmLayout:
    """The names and addresses of one run's farm.

    Args:
        run_id: six hex digits that make every name of this run unique on the host.
        nodes: the number of nodes (1 to :data:`MAX_NODES`).
        root: the folder that holds every file of the farm.
    """

    run_id: str
    nodes: int
    root: str

    def __post_init__(self) -> None:
        if RUN_ID.fullmatch(self.run_id) is None:
            raise ValueError(f"a farm's run id is six hex digits, not {self.run_id!r}")
        if not 1 <= self.nodes <= MAX_NODES:
            raise ValueError(f"a farm has 1 to {MAX_NODES} nodes, not {self.nodes}")

    @property
    def prefix(self) -> str:
        """What every name this run gives on the host starts with."""
        return f"plfarm{self.run_id}"

    @property
    def hub_namespace(self) -> str:
        """The network namespace of the farm network's bridge and the farm's services."""
        return f"{self.prefix}-hub"

    @property
    def hub_address(self) -> str:
        """The hub's address on the farm network, where the farm's services listen."""
        return str(FARM_SUBNET.network_address + 1)

    @property
    def hub_interface(self) -> str:
        """The hub's address with the farm network's prefix length, for ``ip addr add``."""
        return f"{self.hub_address}/{FARM_SUBNET.prefixlen}"

    @property
    def instance(self) -> str:
        """The Plancton instance of every node (one site, one instance name)."""
        return f"farm{self.run_id}"

    @property
    def repository_url(self) -> str:
        """The configuration repository as the nodes clone it, from the hub's git daemon."""
        return f"git://{self.hub_address}:{GIT_PORT}/config.git"

    def node_numbers(self) -> range:
        """Return the nodes' numbers, 1 to :attr:`nodes`."""
        return range(1, self.nodes + 1)

    def node_namespace(self, number: int) -> str:
        """The network namespace of node ``number``."""
        return f"{self.prefix}-n{number}"

    def node_address(self, number: int) -> str:
        """Node ``number``'s address on the farm network."""
        return str(FARM_SUBNET.network_address + FIRST_NODE_HOST + number)

    def node_interface(self, number: int) -> str:
        """Node ``number``'s address with the farm network's prefix length."""
        return f"{self.node_address(number)}/{FARM_SUBNET.prefixlen}"

    def hub_link(self, number: int) -> str:
        """The hub's end of node ``number``'s veth pair, a port of the farm's bridge."""
        return f"node{number}"

    def engine_bridge(self, number: int) -> str:
        """The address of the bridge that node ``number``'s engine gives its containers (--bip)."""
        return f"{ENGINE_SUBNETS.network_address + 256 * number + 1}/24"

    def node_host_name(self, number: int) -> str:
        """Node ``number``'s host name (in a UTS namespace of its own: the host's is untouched),
        the same in every run, as a site's nodes keep theirs: the staged rollout of a revision
        sets each node's turn from it."""
        return f"ws-{number:03d}"

    def node_user(self, number: int) -> str:
        """The user that runs node ``number``'s Plancton, in user mode."""
        return f"{self.prefix}n{number}"

    def node_folder(self, number: int) -> str:
        """The folder of node ``number``'s files: its engine's data, its bus, its user's home."""
        return os.path.join(self.root, f"n{number}")

    @property
    def hub_folder(self) -> str:
        """The folder of the hub's files: its engine, the repository, the pool's files."""
        return os.path.join(self.root, "hub")

    def engine_cgroup(self, name: str) -> str:
        """The cgroup parent of the engine of ``name`` ("hub", "n1"...) for containers that
        are not pilots."""
        return f"{self.prefix}-{name}"
