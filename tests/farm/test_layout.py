"""The farm's layout, the site's configuration and the farm's alert rules: pure, so run by the
ordinary tier too."""

import ipaddress
import os
import re
from pathlib import Path

import pytest
import yaml

from plancton.config import loader
from plancton.platform.host import host_facts
from tests.farm.farm import WORKQUEUE_IMAGE, site_config, workqueue_pilots
from tests.farm.layout import ENGINE_SUBNETS, FARM_SUBNET, MAX_NODES, FarmLayout, ledger_path, run_folder
from tests.farm.watch import SHIPPED_RULES, farm_rules


def layout(nodes: int = MAX_NODES) -> FarmLayout:
    return FarmLayout("0a1b2c", nodes, run_folder("0a1b2c"))


def test_every_node_has_names_and_addresses_of_its_own() -> None:
    farm = layout()
    numbers = farm.node_numbers()
    namings = (farm.node_namespace, farm.node_address, farm.hub_link, farm.engine_bridge, farm.node_user)
    for naming in (*namings, farm.node_host_name):
        names = [naming(number) for number in numbers]
        assert len(set(names)) == MAX_NODES, naming
    addresses = [ipaddress.IPv4Address(farm.node_address(number)) for number in numbers]
    assert all(address in FARM_SUBNET for address in addresses)
    assert str(FARM_SUBNET.network_address + 1) == farm.hub_address not in map(str, addresses)
    bridges = [ipaddress.IPv4Interface(farm.engine_bridge(number)).network for number in numbers]
    assert all(bridge.subnet_of(ENGINE_SUBNETS) and not bridge.overlaps(FARM_SUBNET) for bridge in bridges)
    assert len(set(bridges)) == MAX_NODES


def test_names_fit_the_limits_of_the_host() -> None:
    farm = layout()
    # a link name has at most 15 characters; a user name at most 32
    assert all(len(farm.hub_link(number)) <= 15 for number in farm.node_numbers())
    assert all(len(farm.node_user(number)) <= 32 for number in farm.node_numbers())
    # a host name's label has at most 63 characters, of letters, digits and '-'
    assert all(re.fullmatch(r"[a-z0-9-]{1,63}", farm.node_host_name(number)) for number in farm.node_numbers())
    assert farm.repository_url.startswith(f"git://{farm.hub_address}:")


def test_a_run_keeps_its_files_in_one_folder_and_its_ledger_beside_it() -> None:
    farm = layout(3)
    folders = [farm.hub_folder, *(farm.node_folder(number) for number in farm.node_numbers())]
    assert all(os.path.dirname(folder) == farm.root for folder in folders)
    assert len(set(folders)) == 4
    assert os.path.dirname(ledger_path("0a1b2c")) == os.path.dirname(farm.root)
    assert not ledger_path("0a1b2c").startswith(farm.root + "/")


@pytest.mark.parametrize(("run_id", "nodes"), [("0a1b2", 3), ("0A1B2C", 3), ("0a1b2c", 0), ("0a1b2c", MAX_NODES + 1)])
def test_a_layout_refuses_what_it_cannot_name(run_id: str, nodes: int) -> None:
    with pytest.raises(ValueError, match=r"run id|nodes"):
        FarmLayout(run_id, nodes, "/nowhere")


def test_the_site_configuration_is_valid_and_names_no_node(tmp_path: Path) -> None:
    farm = layout(3)
    path = tmp_path / "config.yaml"
    path.write_text(site_config(farm, "/srv/tokens.d", max_docks=1))
    config, _ = loader.load(str(path), host_facts())
    assert config.instance == farm.instance
    assert dict(config.environment)["_condor_CONDOR_HOST"] == farm.hub_address
    assert config.binds == ("/srv/tokens.d:/etc/condor/tokens.d",)
    assert config.max_docks == "1"
    assert config.engine_url is None
    assert all(farm.node_address(number) not in path.read_text() for number in farm.node_numbers())


def test_the_work_queue_configuration_is_valid_and_points_the_pilots_at_the_hub(tmp_path: Path) -> None:
    farm = layout(3)
    path = tmp_path / "config.yaml"
    path.write_text(site_config(farm, "/srv/tokens.d", **workqueue_pilots(farm, 9123)))
    config, _ = loader.load(str(path), host_facts())
    assert config.docker_image == WORKQUEUE_IMAGE
    assert config.docker_cmd[0] == "plancton-worker" and config.docker_cmd[-2:] == (farm.hub_address, "9123")
    assert config.environment == () and config.binds == ()
    assert config.network_mode == "bridge" and config.replace_on_image_change


def test_the_farm_evaluates_the_shipped_rules_changed_only_in_how_long_they_wait() -> None:
    shipped = Path(SHIPPED_RULES).read_text(encoding="utf-8")
    rules = yaml.safe_load(shipped)["groups"][0]["rules"]
    farm = yaml.safe_load(farm_rules(shipped, "10s"))["groups"][0]["rules"]
    assert [rule.get("for") for rule in farm] == ["10s" if "for" in rule else None for rule in rules]
    assert any("for" in rule for rule in rules) and any("for" not in rule for rule in rules)
    assert [{**rule, "for": None} for rule in farm] == [{**rule, "for": None} for rule in rules]
    assert farm_rules(shipped, "10s").count("\n") == shipped.count("\n")
