"""Where a rootless engine's pilots live: under its user's service manager, whose cgroup must
have the CPU controller delegated (the folders are laid out as systemd makes them; the real
thing runs in the VM tier, tests/vm/guest/podman_host.py)."""

import os

from plancton.platform.cgroups import PilotCgroup

MANAGER = "user.slice/user-1000.slice/user@1000.service"


def make_tree(root: str, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="ascii") as handle:
            handle.write(text)


def read(path: str) -> str:
    with open(path, encoding="ascii") as handle:
        return handle.read()


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
    assert read(os.path.join(root, MANAGER, "plancton.slice/cpu.idle")) == "1"
    assert cgroup.cpu_seconds() == 2.0


def test_a_rootful_engines_slice_is_at_the_root(tmp_path: "os.PathLike[str]") -> None:
    root = str(tmp_path)
    make_tree(root, {"cgroup.controllers": "cpu memory pids", "plancton.slice/cpu.idle": "0"})
    cgroup = PilotCgroup("plancton", "systemd", 2, root, engine_uid=0)
    assert cgroup.set_lowest_weight() is None
    assert read(os.path.join(root, "plancton.slice/cpu.idle")) == "1"


def test_a_user_manager_without_the_cpu_controller_is_reported_with_its_fix(tmp_path: "os.PathLike[str]") -> None:
    root = str(tmp_path)
    make_tree(root, {f"{MANAGER}/cgroup.controllers": "memory pids"})
    cgroup = PilotCgroup("plancton", "systemd", 2, root, engine_uid=1000)
    warning = cgroup.set_lowest_weight()
    assert warning is not None and "\n" not in warning
    assert "not delegated to user 1000's service manager" in warning
    assert "Delegate=cpu" in warning and "user@.service" in warning
    assert cgroup.setting == "default weight"
