"""Writing the files of the run folder safely."""

import contextlib
import os


def write_private_file(path: str, text: str, mode: int = 0o644) -> None:
    """Write text to path atomically, never following a symlink planted at the temporary name.

    Raises:
        OSError: the folder is not writable.
    """
    temporary = f"{path}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    descriptor = os.open(temporary, flags, mode)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
