"""Unit tests of per-node overlays: selectors, the merge, the labels file, and the loader that
reads ``hosts/*.yaml`` beside config.yaml and validates a checkout as a whole.
"""

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plancton.config import display, files, loader, overlays
from plancton.config.schema import HostFacts
from plancton.daemon.watcher import ConfigWatcher
from plancton.errors import ConfigError
from plancton.platform.host import host_facts

GIB = 1024**3
NODE = HostFacts(ncpus=64, ram_bytes=256 * GIB, swap_bytes=0, hostname="node07", labels=frozenset({"gpu", "rack-3"}))
LAPTOP = HostFacts(ncpus=4, ram_bytes=8 * GIB, swap_bytes=0, hostname="ws-alice", labels=frozenset())
#: 2026-12-05T12:00:00Z
NOW = 1796472000.0


def overlay(match: Any, name: str = "hosts/a.yaml", **values: Any) -> overlays.Overlay:
    """Return the overlay of a mapping with this match and these keys."""
    return overlays.parse_overlay({"match": match, **values}, name)


def problems(match: Any) -> list[str]:
    """Return the problems of an overlay with this match."""
    with pytest.raises(ConfigError) as raised:
        overlay(match)
    assert raised.value.source == "hosts/a.yaml"
    return raised.value.problems


# -- selectors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "selects_node", "selects_laptop"),
    [
        ({"hosts": ["ws-*", "node07"]}, True, True),
        ({"hosts": "ws-*"}, False, True),
        ({"hosts": ["node0[0-6]"]}, False, False),
        ({"ncpus": {"min": 32}}, True, False),
        ({"ncpus": {"max": 8}}, False, True),
        ({"ncpus": 64}, True, False),
        ({"ncpus": {"min": 8, "max": 64}}, True, False),
        ({"memory": {"min": "64G"}}, True, False),
        ({"memory": {"max": "8GiB"}}, False, True),
        ({"labels": ["gpu"]}, True, False),
        ({"labels": ["gpu", "rack-4"]}, False, False),
        ({"hosts": ["node*"], "ncpus": {"min": 128}}, False, False),
        ({"hosts": ["*"]}, True, True),
    ],
)
def test_a_selector_selects_the_nodes_that_meet_every_criterion(
    match: dict[str, Any], selects_node: bool, selects_laptop: bool
) -> None:
    selector = overlay(match).selector
    assert selector.selects(NODE) is selects_node
    assert selector.selects(LAPTOP) is selects_laptop


def test_host_patterns_are_case_sensitive_like_the_files_that_name_them() -> None:
    assert not overlay({"hosts": ["NODE07"]}).selector.selects(NODE)


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        (None, "match: expected a mapping of criteria such as {hosts:"),
        ({}, "match: expected a mapping of criteria"),
        ("ws-*", "match: expected a mapping of criteria"),
        ({"host": ["ws-*"]}, "match.host: unknown criterion; expected one of hosts, ncpus, memory, labels"),
        ({"hosts": []}, "match.hosts: expected a list of host-name patterns"),
        (
            {"hosts": ["ws 1"]},
            "match.hosts: expected host-name patterns of letters, digits, '.', '-', '_' and the wildcards "
            '* ? [ ], got "ws 1"',
        ),
        ({"hosts": [7]}, "match.hosts: expected host-name patterns"),
        ({"ncpus": ">=32"}, 'match.ncpus: expected {min: 32}, {max: 32}, both, or 32 exactly, got ">=32"'),
        ({"ncpus": {"min": 64, "max": 32}}, "match.ncpus: expected min no greater than max"),
        ({"ncpus": {"least": 4}}, "match.ncpus: expected {min: 32}"),
        (
            {"ncpus": {"min": -1}},
            "match.ncpus: expected {min: 32}, {max: 32}, both, or 32 exactly: expected a whole number of CPUs, got -1",
        ),
        ({"memory": {"min": "lots"}}, "match.memory: expected {min: 64G}"),
        ({"labels": ["GPU card"]}, "match.labels: expected a label of letters"),
        ({"labels": []}, "match.labels: expected a list of labels"),
    ],
)
def test_a_malformed_selector_is_refused_naming_the_file_and_the_criterion(match: Any, expected: str) -> None:
    found = problems(match)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_every_problem_of_a_selector_is_told_at_once() -> None:
    found = problems({"hosts": [], "ncpus": "many", "colour": "red"})
    assert [problem.split(":")[0] for problem in found] == ["match.colour", "match.hosts", "match.ncpus"]


def test_an_overlay_without_match_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError) as raised:
        overlays.parse_overlay({"max_docks": 4}, "hosts/big.yaml")
    assert raised.value.describe() == (
        'hosts/big.yaml: match: missing; say which nodes this file is for, such as match: {hosts: ["ws-*"]}'
    )


# -- the merge ----------------------------------------------------------------------------------


def test_selected_overlays_apply_in_order_and_replace_whole_values() -> None:
    base = {"max_docks": 2, "binds": ["/a:/a", "/b:/b"], "environment": {"A": "1", "B": "2"}}
    found = [
        overlay({"ncpus": {"min": 32}}, "hosts/10-big.yaml", max_docks="ncpus - 4", binds=["/c:/c"]),
        overlay({"labels": ["gpu"]}, "hosts/20-gpu.yaml", environment={"GPU": "1"}),
        overlay({"hosts": ["ws-*"]}, "hosts/30-desks.yaml", max_docks=1),
        overlay({"hosts": ["node*"]}, "hosts/40-nodes.yaml", max_docks="ncpus - 8"),
    ]
    merged = overlays.merge(base, found, NODE)
    assert merged.raw == {"max_docks": "ncpus - 8", "binds": ["/c:/c"], "environment": {"GPU": "1"}}
    assert merged.applied == ("hosts/10-big.yaml", "hosts/20-gpu.yaml", "hosts/40-nodes.yaml")
    assert merged.origins == {
        "max_docks": "hosts/40-nodes.yaml",
        "binds": "hosts/10-big.yaml",
        "environment": "hosts/20-gpu.yaml",
    }
    assert base == {"max_docks": 2, "binds": ["/a:/a", "/b:/b"], "environment": {"A": "1", "B": "2"}}
    laptop = overlays.merge(base, found, LAPTOP)
    assert laptop.raw == {**base, "max_docks": 1} and laptop.applied == ("hosts/30-desks.yaml",)


keys = st.sampled_from(["max_docks", "binds", "docker_image", "environment", "main_sleep"])
values = st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3))
mappings = st.dictionaries(keys, values, max_size=5)


@given(mappings, st.lists(st.tuples(st.booleans(), mappings), max_size=5))
def test_the_merge_is_the_last_selected_overlay_to_set_each_key(
    base: dict[str, Any], layers: list[tuple[bool, dict[str, Any]]]
) -> None:
    found = [
        overlay({"hosts": ["node07" if selected else "elsewhere"]}, f"hosts/{index}.yaml", **layer)
        for index, (selected, layer) in enumerate(layers)
    ]
    merged = overlays.merge(base, found, NODE)
    for name in set(base) | {name for _, layer in layers for name in layer}:
        setting = [index for index, (selected, layer) in enumerate(layers) if selected and name in layer]
        if setting:
            assert merged.raw[name] == layers[setting[-1]][1][name]
            assert merged.origins[name] == f"hosts/{setting[-1]}.yaml"
        else:
            assert merged.raw.get(name) == base.get(name) and name not in merged.origins
    assert merged.applied == tuple(f"hosts/{index}.yaml" for index, (selected, _) in enumerate(layers) if selected)


# -- labels -------------------------------------------------------------------------------------


def test_a_labels_file_has_one_label_a_line_with_comments() -> None:
    assert overlays.parse_labels_text("# this node\ngpu\n\n rack-3  # the third\n") == {"gpu", "rack-3"}
    with pytest.raises(ValueError, match=r'line 2: expected a label of letters.*got "big node"'):
        overlays.parse_labels_text("gpu\nbig node\n")


def test_labels_are_read_from_their_file(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    assert loader.read_labels(str(path)) == frozenset()
    path.write_text("gpu\n")
    assert loader.read_labels(str(path)) == {"gpu"}
    path.write_text("-gpu\n")
    with pytest.raises(ConfigError, match=f"{path}: line 1: expected a label"):
        loader.read_labels(str(path))


# -- the loader: config.yaml and hosts/*.yaml ---------------------------------------------------


def checkout(tmp_path: Path, base: str, **overlay_files: str) -> str:
    """Write config.yaml and overlays (hosts/NAME.yaml); return the config.yaml's path."""
    (tmp_path / "hosts").mkdir(exist_ok=True)
    for name, text in overlay_files.items():
        (tmp_path / "hosts" / name).write_text(text)
    (tmp_path / "config.yaml").write_text(base)
    return str(tmp_path / "config.yaml")


def test_load_merges_the_overlays_that_select_the_node_and_names_their_files(tmp_path: Path) -> None:
    path = checkout(
        tmp_path,
        "max_docks: 2\nmain_sleep: 3\n",
        **{
            "big.yaml": "match: {ncpus: {min: 32}}\nmax_docks: ncpus - 4\n",
            "gpu.yaml": "match: {labels: [gpu]}\ndevices: [/dev/null]\n",
            "desks.yaml": "match: {hosts: [ws-*]}\nmax_docks: 1\n",
        },
    )
    config, warnings = loader.load(path, NODE)
    assert warnings == []
    assert (config.pool_size, config.devices, config.main_sleep) == (60, ("/dev/null",), 3.0)
    assert config.overlays == ("hosts/big.yaml", "hosts/gpu.yaml")
    origins = {name: origin for name, _, origin in display.describe(config)}
    assert origins["max_docks"] == "hosts/big.yaml" and origins["devices"] == "hosts/gpu.yaml"
    assert origins["main_sleep"] == "config.yaml" and origins["docker_image"] == "default"

    laptop, _ = loader.load(path, LAPTOP)
    assert (laptop.pool_size, laptop.overlays) == (1, ("hosts/desks.yaml",))
    assert (
        len(
            {config.revision, laptop.revision, loader.load(path, dataclasses.replace(LAPTOP, hostname="x"))[0].revision}
        )
        == 3
    )


def test_without_overlays_the_revision_is_the_files_own(tmp_path: Path) -> None:
    path = checkout(tmp_path, "max_docks: 2\n", **{"other.yaml": "match: {hosts: [elsewhere]}\nmax_docks: 9\n"})
    config, _ = loader.load(path, NODE)
    alone, _ = loader.parse({"max_docks": 2}, NODE)
    assert config.overlays == () and config.revision == files.revision_of(b"max_docks: 2\n")
    assert dataclasses.replace(config, source=alone.source, revision=alone.revision) == alone


def test_an_overlay_that_makes_the_config_invalid_is_refused_naming_the_file_and_key(tmp_path: Path) -> None:
    path = checkout(
        tmp_path,
        "owner_busy_percent: 50\n",
        **{"a.yaml": "match: {hosts: [node*]}\nmax_dock_mem: lots\nowner_idle_percent: 60\nmaxdocks: 3\n"},
    )
    with pytest.raises(ConfigError) as raised:
        loader.load(path, NODE)
    assert raised.value.source == path
    assert raised.value.problems == [
        'max_dock_mem (set by hosts/a.yaml): expected a size such as 2000000000 or "2G", got "lots"',
        "owner_idle_percent (set by hosts/a.yaml): expected less than owner_busy_percent (50), got 60",
        'unknown key "maxdocks" ignored (did you mean "max_docks"?) (in hosts/a.yaml)',
    ]
    assert loader.load(path, LAPTOP)[0].overlays == ()  # the overlay does not select a laptop


def test_every_malformed_file_is_told_at_once_even_those_for_other_nodes(tmp_path: Path) -> None:
    path = checkout(
        tmp_path,
        "max_docks: [\n",
        **{"a.yaml": "max_docks: 1\n", "b.yaml": "match: {ncpus: lots}\n", "c.yaml": "- a list\n", "notes.txt": "x"},
    )
    with pytest.raises(ConfigError) as raised:
        loader.load(path, LAPTOP)
    found = raised.value.problems
    assert found[0].startswith("invalid YAML at line 2")
    assert found[1].startswith("hosts/a.yaml: match: missing")
    assert found[2].startswith("hosts/b.yaml: match.ncpus: expected {min: 32}")
    assert found[3] == "hosts/c.yaml: expected a mapping of keys to values, got a list"
    assert len(found) == 4


def test_files_in_hosts_that_are_not_overlays_are_ignored_with_a_warning(tmp_path: Path) -> None:
    path = checkout(tmp_path, "", **{"big.yml": "match: {hosts: ['*']}\nmax_docks: 9\n"})
    config, warnings = loader.load(path, NODE)
    assert config.overlays == ()
    assert warnings == [f"{tmp_path}/hosts/big.yml: ignored; an overlay's name ends in .yaml"]


def test_a_symbolic_link_is_no_overlay(tmp_path: Path) -> None:
    path = checkout(tmp_path, "")
    (tmp_path / "hosts" / "secret.yaml").symlink_to("/etc/hostname")
    with pytest.raises(ConfigError, match=r"hosts/secret\.yaml: is a symbolic link; an overlay is a plain file"):
        loader.load(path, NODE)


def test_check_all_tries_every_overlay_over_the_base_whichever_nodes_it_selects(tmp_path: Path) -> None:
    path = checkout(
        tmp_path,
        "max_docks: 2\n",
        **{"a.yaml": "match: {hosts: [nowhere]}\nmax_docks: 1\n", "b.yaml": "match: {labels: [x]}\nmain_sleep: 1\n"},
    )
    assert loader.check_all(path, LAPTOP, NOW) == (["hosts/a.yaml", "hosts/b.yaml"], [])
    (tmp_path / "hosts" / "c.yaml").write_text("match: {hosts: [nowhere]}\nmain_sleep: never\n")
    with pytest.raises(ConfigError) as raised:
        loader.check_all(path, LAPTOP, NOW)
    assert raised.value.problems == [
        'config.yaml + hosts/c.yaml: main_sleep (set by hosts/c.yaml): expected seconds such as 30 or "5m", got "never"'
    ]


def test_check_all_refuses_a_drain_deadline_already_past(tmp_path: Path) -> None:
    """A drain_by left from the last maintenance would idle every node that takes it."""
    path = checkout(
        tmp_path,
        'drain_by: "2026-12-05T18:00:00Z"\n',
        **{
            "old.yaml": 'match: {hosts: [x]}\ndrain_by: "2026-12-01T08:00:00+01:00"\n',
            "b.yaml": "match: {hosts: [y]}\nmax_docks: 1\n",
        },
    )
    with pytest.raises(ConfigError) as raised:
        loader.check_all(path, LAPTOP, NOW)
    assert raised.value.problems == [
        "config.yaml + hosts/old.yaml: drain_by (set by hosts/old.yaml): 2026-12-01T07:00:00Z is past, and a node "
        "taking it would start no pilot and stop those it runs; give a later time, or remove the key once the "
        "maintenance is over"
    ]
    (tmp_path / "hosts" / "old.yaml").unlink()
    assert loader.check_all(path, LAPTOP, NOW) == (["hosts/b.yaml"], [])
    with pytest.raises(ConfigError) as raised:
        loader.check_all(path, LAPTOP, NOW + 7 * 3600)
    assert [problem.split(": drain_by")[0] for problem in raised.value.problems] == ["config.yaml"]


def test_check_all_tells_a_problem_of_the_base_once(tmp_path: Path) -> None:
    path = checkout(
        tmp_path,
        "main_sleep: never\n",
        **{"a.yaml": "match: {hosts: [x]}\nmax_docks: -1\n", "b.yaml": "match: {hosts: [y]}\n"},
    )
    with pytest.raises(ConfigError) as raised:
        loader.check_all(path, LAPTOP, NOW)
    found = raised.value.problems
    assert [problem.split(": ")[0] for problem in found] == ["config.yaml", "config.yaml + hosts/a.yaml"]
    assert "main_sleep" in found[0] and "max_docks (set by hosts/a.yaml)" in found[1]


# -- the daemon's watcher -----------------------------------------------------------------------


def test_the_watcher_notices_a_new_overlay_and_changed_labels_and_loads_them(tmp_path: Path) -> None:
    path = checkout(tmp_path, "max_docks: 2\n")
    labels = tmp_path / "labels"
    later = [2000000000.0]  # every file looks written long ago, none half-written
    watcher = ConfigWatcher(path, str(labels), clock=lambda: later[0], wall=lambda: later[0])
    config, _ = loader.load(path, host_facts())
    assert not watcher.changed(0)

    (tmp_path / "hosts" / "gpu.yaml").write_text("match: {labels: [gpu]}\nmax_docks: 1\n")
    assert watcher.changed(0)
    assert watcher.load(config) is None  # the overlay does not select this node: nothing changes
    assert not watcher.changed(0)

    labels.write_text("gpu\n")
    assert watcher.changed(0)
    new = watcher.load(config)
    assert new is not None and new.overlays == ("hosts/gpu.yaml",) and new.pool_size == 1

    labels.write_text("not a label!\n")
    assert watcher.changed(0) and watcher.load(new) is None  # refused: the old configuration stays
