"""The machine-features folder: what pilots read of this node, in the HEP "machine/job
features" layout (one value a file).

The folder is bound read-only into every pilot at :data:`IN_PILOT`, named by the
environment variable ``MACHINEFEATURES``. It holds ``shutdowntime``, the drain deadline in
Unix seconds, while there is one. The folder is bound, not the file: a file written again is
a new file (written aside, then renamed), which a pilot sees only through a bound folder.
"""

import contextlib
import os

from plancton.control.files import write_private_file

FOLDER = "machinefeatures"
SHUTDOWNTIME = "shutdowntime"
#: Where pilots find the folder.
IN_PILOT = "/run/machinefeatures"
#: The environment variable that names it, as the convention does.
VARIABLE = "MACHINEFEATURES"
_FOLDER_MODE = 0o755
_FILE_MODE = 0o644


def features_dir(rundir: str) -> str:
    """Given the run folder, return the machine-features folder in it."""
    return os.path.join(rundir, FOLDER)


def prepare_folder(folder: str) -> None:
    """Create the folder, readable by the pilots' users (whatever the umask).

    Raises:
        OSError: it cannot be made.
    """
    os.makedirs(folder, exist_ok=True)
    os.chmod(folder, _FOLDER_MODE)


def publish_shutdowntime(folder: str, deadline: float | None) -> None:
    """Write the deadline (None: remove the file) as ``shutdowntime``, whole Unix seconds, in
    place: a pilot reads the old value or the new one, never a part.

    Raises:
        OSError: the folder is not writable.
    """
    path = os.path.join(folder, SHUTDOWNTIME)
    if deadline is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    write_private_file(path, f"{int(deadline)}\n", mode=_FILE_MODE)
    os.chmod(path, _FILE_MODE)


def remove_folder(folder: str) -> None:
    """Remove the folder and its file, when no pilot is left to read them."""
    with contextlib.suppress(OSError):
        publish_shutdowntime(folder, None)
        os.rmdir(folder)
