"""The pilots' parent cgroup on both cgroup versions and both Docker drivers, on cgroup
file trees laid out like the kernel's; a rootless engine's pilots under its user's service
manager, whose cgroup must have the CPU controller delegated (laid out as systemd makes it;
the real thing runs in the VM tier, tests/vm/guest/podman_host.py)."""

import os
import secrets
import subprocess

import pytest

from plancton.platform.cgroups import CGROUP_ROOT, PilotCgroup
from tests.support.file_trees import make_tree

MANAGER = "user.slice/user-1000.slice/user@1000.service"


def read(root: str, relative: str) -> str:
    with open(os.path.join(root, relative), encoding="ascii") as handle:
        return handle.read()


@pytest.mark.parametrize(
    ("driver", "version", "folder"),
    [
        ("cgroupfs", 1, "cpu/plancton"),
        ("systemd", 1, "cpu/plancton.slice"),
        ("cgroupfs", 2, "plancton"),
        ("systemd", 2, "plancton.slice"),
    ],
)
def test_parent_names_and_lowest_weight(driver: str, version: int, folder: str, tmp_path: "os.PathLike[str]") -> None:
    root = str(tmp_path)
    weight = "cpu.weight" if version == 2 else "cpu.shares"
    make_tree(root, {f"{folder}/{weight}": "100"})
    cgroup = PilotCgroup("plancton", driver, version, root)
    assert cgroup.docker_parent == ("plancton.slice" if driver == "systemd" else "/plancton")
    assert cgroup.cpu_folder == os.path.join(root, folder)
    assert cgroup.set_lowest_weight() is None
    assert read(root, f"{folder}/{weight}") == ("1" if version == 2 else "2")


def test_cpu_idle_is_preferred_where_the_kernel_has_it(tmp_path: "os.PathLike[str]") -> None:
    root = str(tmp_path)
    make_tree(root, {"plancton/cpu.idle": "0", "plancton/cpu.weight": "100"})
    assert PilotCgroup("plancton", "cgroupfs", 2, root).set_lowest_weight() is None
    assert read(root, "plancton/cpu.idle") == "1"
    assert read(root, "plancton/cpu.weight") == "100"  # SCHED_IDLE makes the weight moot


@pytest.mark.parametrize(
    ("version", "files", "weight_file", "lowest", "lifted"),
    [
        (1, {"cpu/plancton/cpu.shares": "1024"}, "cpu/plancton/cpu.shares", "2", "1024"),
        (2, {"plancton/cpu.weight": "100"}, "plancton/cpu.weight", "1", "100"),
        (2, {"plancton/cpu.idle": "0", "plancton/cpu.weight": "100"}, "plancton/cpu.idle", "1", "0"),
    ],
)
def test_the_lowest_weight_is_lifted_while_pauses_are_asked(
    version: int, files: dict[str, str], weight_file: str, lowest: str, lifted: str, tmp_path: "os.PathLike[str]"
) -> None:
    """A starved task never reaches the freezer, on either cgroup version: the weight is
    ordinary from the first pause request to the end of the last, then the lowest again."""
    root = str(tmp_path)
    make_tree(root, files)
    cgroup = PilotCgroup("plancton", "cgroupfs", version, root)
    assert cgroup.set_lowest_weight() is None
    assert read(root, weight_file) == lowest
    with cgroup.lifted_for_freeze():
        assert read(root, weight_file) == lifted
        with cgroup.lifted_for_freeze():  # a second pilot's pause, on another thread
            assert read(root, weight_file) == lifted
        assert read(root, weight_file) == lifted
    assert read(root, weight_file) == lowest


def test_no_lift_where_plancton_did_not_set_the_weight(tmp_path: "os.PathLike[str]") -> None:
    """Pilots at the default weight (no CPU controller) need no lift, and none is written."""
    root = str(tmp_path)
    make_tree(root, {"cgroup.controllers": "memory pids", "plancton/cpu.weight": "100"})
    cgroup = PilotCgroup("plancton", "cgroupfs", 2, root)
    assert cgroup.set_lowest_weight() is not None
    with cgroup.lifted_for_freeze():
        assert read(root, "plancton/cpu.weight") == "100"
    assert read(root, "plancton/cpu.weight") == "100"


def test_a_rootless_engines_slice_is_in_its_users_manager(tmp_path: "os.PathLike[str]") -> None:
    root = str(tmp_path)
    make_tree(
        root,
        {
            "cgroup.controllers": "cpuset cpu io memory pids",
            f"{MANAGER}/cgroup.controllers": "cpu memory pids",
            f"{MANAGER}/plancton.slice/cpu.idle": "0",
            f"{MANAGER}/plancton.slice/cpu.stat": "usage_usec 2000000\n",
        },
    )
    cgroup = PilotCgroup("plancton", "systemd", 2, root, engine_uid=1000)
    assert cgroup.docker_parent == "plancton.slice"
    assert cgroup.set_lowest_weight() is None
    assert cgroup.setting == "cpu.idle 1"
    assert read(root, f"{MANAGER}/plancton.slice/cpu.idle") == "1"
    assert cgroup.cpu_seconds() == 2.0


def test_a_rootful_engines_slice_is_at_the_root(tmp_path: "os.PathLike[str]") -> None:
    root = str(tmp_path)
    make_tree(root, {"cgroup.controllers": "cpu memory pids", "plancton.slice/cpu.idle": "0"})
    cgroup = PilotCgroup("plancton", "systemd", 2, root, engine_uid=0)
    assert cgroup.set_lowest_weight() is None
    assert read(root, "plancton.slice/cpu.idle") == "1"


def test_a_user_manager_without_the_cpu_controller_is_reported_with_its_fix(tmp_path: "os.PathLike[str]") -> None:
    root = str(tmp_path)
    make_tree(root, {f"{MANAGER}/cgroup.controllers": "memory pids"})
    cgroup = PilotCgroup("plancton", "systemd", 2, root, engine_uid=1000)
    warning = cgroup.set_lowest_weight()
    assert warning is not None and "\n" not in warning
    assert "not delegated to user 1000's service manager" in warning
    assert "Delegate=cpu" in warning and "user@.service" in warning
    assert cgroup.setting == "default weight"


def test_cpu_accounting_of_both_versions(tmp_path: "os.PathLike[str]") -> None:
    root = str(tmp_path)
    make_tree(root, {"cpuacct/plancton/cpuacct.usage": "2500000000\n"})
    assert PilotCgroup("plancton", "cgroupfs", 1, root).cpu_seconds() == pytest.approx(2.5)
    make_tree(root, {"plancton/cpu.stat": "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n"})
    assert PilotCgroup("plancton", "cgroupfs", 2, root).cpu_seconds() == pytest.approx(1.5)
    assert PilotCgroup("absent", "cgroupfs", 2, root).cpu_seconds() is None


@pytest.mark.parametrize(
    ("version", "files", "quota_file", "uncapped", "lifted"),
    [
        (2, {"plancton/cpu.max": "150000 100000\n"}, "plancton/cpu.max", "max 50000\n", "max 100000"),
        (1, {"cpu/plancton/cpu.cfs_quota_us": "150000\n"}, "cpu/plancton/cpu.cfs_quota_us", "-1\n", "-1"),
    ],
)
def test_lifting_the_cap_writes_only_a_cap_that_is_there(
    version: int, files: dict[str, str], quota_file: str, uncapped: str, lifted: str, tmp_path: "os.PathLike[str]"
) -> None:
    """A daemon in user mode may not write the cgroup: at its start it lifts no cap that is
    not there, and so warns of nothing; a cap left by an earlier daemon is lifted."""
    root = str(tmp_path)
    make_tree(root, files)
    cgroup = PilotCgroup("plancton", "cgroupfs", version, root)
    assert cgroup.set_cpu_cap(None) is None
    assert read(root, quota_file) == lifted
    make_tree(root, {quota_file: uncapped})
    assert cgroup.set_cpu_cap(None) is None
    assert read(root, quota_file) == uncapped


def test_unwritable_cgroup_gives_a_warning_not_an_error(tmp_path: "os.PathLike[str]") -> None:
    root = os.path.join(tmp_path, "not-a-folder")
    with open(root, "w", encoding="ascii") as handle:
        handle.write("")
    warning = PilotCgroup("plancton", "cgroupfs", 1, root).set_lowest_weight()
    assert warning is not None and "lowest CPU weight" in warning


@pytest.mark.skipif(os.geteuid() != 0, reason="creating cgroups needs root")
def test_remove_clears_what_a_runtime_left_and_keeps_a_live_pilot() -> None:
    """On this host's own cgroup file system: the empty cgroups a runtime leaves below the
    parent for containers already gone are removed with it; one in which a process still
    runs keeps the parent."""
    version = 2 if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")) else 1
    cgroup = PilotCgroup(f"t{secrets.token_hex(4)}", "cgroupfs", version)
    parent = cgroup._folder("pids")
    for child in ("gone-container", "live-container"):
        os.makedirs(os.path.join(parent, child))
    pilot = subprocess.Popen(["sleep", "60"])
    try:
        with open(os.path.join(parent, "live-container", "cgroup.procs"), "w", encoding="ascii") as handle:
            handle.write(str(pilot.pid))
        assert cgroup.remove() == []
        assert not os.path.exists(os.path.join(parent, "gone-container"))
        assert os.path.isdir(os.path.join(parent, "live-container"))
    finally:
        pilot.kill()
        pilot.wait()
    assert parent in cgroup.remove()
    assert not os.path.exists(parent)


@pytest.mark.skipif(
    os.geteuid() != 0 or os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")),
    reason="creating cgroups needs root; the rule is cgroup v1's",
)
def test_a_cap_below_one_pilots_own_on_cgroup_v1_names_the_fix() -> None:
    """On this host's cgroup v1: the kernel refuses a parent's quota below a child's, which a
    lend_cores under cpus_per_dock asks for; the warning names the file and the fix."""
    cgroup = PilotCgroup(f"t{secrets.token_hex(4)}", "cgroupfs", 1)
    pilot = os.path.join(cgroup.cpu_folder, "pilot")
    os.makedirs(pilot)
    try:
        with open(os.path.join(pilot, "cpu.cfs_quota_us"), "w", encoding="ascii") as handle:
            handle.write("50000")  # a pilot of cpus_per_dock 0.5
        assert cgroup.set_cpu_cap(0.75) is None
        warning = cgroup.set_cpu_cap(0.25)
        assert warning is not None and "cpu.cfs_quota_us: Invalid argument" in warning
        assert "set lend_cores to at least cpus_per_dock" in warning
        assert cgroup.set_cpu_cap(None) is None
    finally:
        os.rmdir(pilot)
        os.rmdir(cgroup.cpu_folder)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root gives files to another user")
@pytest.mark.parametrize(("version", "folder"), [(1, "cpu/plancton"), (2, "plancton")])
def test_root_hands_the_parent_with_the_lowest_weight_over_to_the_daemons_user(
    version: int, folder: str, tmp_path: "os.PathLike[str]"
) -> None:
    root = str(tmp_path)
    weight = "cpu.weight" if version == 2 else "cpu.shares"
    make_tree(root, {f"{folder}/{weight}": "100", f"{folder}/cgroup.procs": "", f"{folder}/memory.max": "max"})
    cgroup = PilotCgroup("plancton", "cgroupfs", version, root)
    nobody = 65534
    assert not cgroup.is_handed_over(nobody)  # not the user's yet
    assert cgroup.set_lowest_weight() is None
    cgroup.hand_over(nobody, nobody)
    assert cgroup.is_handed_over(nobody) and not cgroup.is_handed_over(0)
    owners = {name: os.stat(os.path.join(root, folder, name)).st_uid for name in (".", weight, "cgroup.procs")}
    assert owners == {".": nobody, weight: nobody, "cgroup.procs": nobody}
    assert os.stat(os.path.join(root, folder, "memory.max")).st_uid == 0  # none of the daemon's business
    # an ordinary weight, as a hand-made cgroup may have, is not the lowest
    make_tree(root, {f"{folder}/{weight}": "100"})
    assert not cgroup.is_handed_over(nobody)
