"""Trees of small files laid out like the kernel's (/sys/fs/cgroup, /proc/pressure), for the
tests of the readers of the platform."""

import os


def make_tree(root: str, files: dict[str, str]) -> None:
    """Write each file of ``files`` (relative path: content) under ``root``, with its folders."""
    for relative, content in files.items():
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="ascii") as handle:
            handle.write(content)
