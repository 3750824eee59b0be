"""What a node was told about itself at install, kept in the state folder (outside the
configuration's git checkout, which its repository replaces): its labels, which overlays of a
configuration repository select nodes by (see :mod:`plancton.config.overlays`), and the ssh
keys whose signed commits it takes (git's allowed-signers file).
"""

import os
import re

from plancton.config.loader import read_labels
from plancton.config.schema import HostFacts
from plancton.control.files import write_private_file
from plancton.control.paths import Paths
from plancton.errors import PlanctonError
from plancton.platform.host import host_facts

LABELS_NAME = "labels"
TRUST_NAME = "allowed-signers"
#: An entry of git's allowed-signers file: principals, options maybe, then a key type and the key.
_SIGNER = re.compile(
    r"\S+(?:\s+\S+)*?\s+(?:ssh-(?:ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-\S+@openssh\.com)\s+[A-Za-z0-9+/]+=*(?:\s.*)?"
)


def made_state_folder(paths: Paths) -> str:
    """Create the state folder when it is missing (private in user mode); return it.

    Raises:
        OSError: it cannot be created.
    """
    os.makedirs(paths.statedir, mode=0o700 if paths.user_mode else 0o755, exist_ok=True)
    return paths.statedir


def labels_path(paths: Paths) -> str:
    """Return the labels file of a node: one label a line, in its state folder."""
    return os.path.join(paths.statedir, LABELS_NAME)


def node_facts(paths: Paths) -> HostFacts:
    """Return this node's facts, with the labels it was given.

    Raises:
        ConfigError: the labels file is unreadable or holds a malformed label.
    """
    return host_facts(read_labels(labels_path(paths)))


def write_labels(paths: Paths, labels: frozenset[str]) -> None:
    """Write the node's labels (none: the file goes), replacing those it had.

    Raises:
        OSError: the state folder cannot be created or written.
    """
    path = labels_path(paths)
    if not labels:
        if os.path.lexists(path):
            os.unlink(path)
        return
    made_state_folder(paths)
    heading = "# Labels of this node, one a line: overlays of the configuration repository select nodes by them.\n"
    write_private_file(path, heading + "".join(f"{label}\n" for label in sorted(labels)))


def trust_path(paths: Paths) -> str:
    """Return the node's allowed-signers file, in its state folder."""
    return os.path.join(paths.statedir, TRUST_NAME)


def check_signers(text: str, source: str) -> None:
    """Given the text of an allowed-signers file, check that it lists at least one key.

    Raises:
        PlanctonError: naming ``source`` and the line that is not an entry.
    """
    entries = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if _SIGNER.fullmatch(line.strip()) is None:
            raise PlanctonError(
                f"{source}: line {number} is not an allowed signer; expected PRINCIPAL KEYTYPE KEY, "
                'such as "admin@farm ssh-ed25519 AAAAC3Nz..." (see ALLOWED SIGNERS in man ssh-keygen)'
            )
        entries += 1
    if not entries:
        raise PlanctonError(f"{source}: lists no signer; add a line PRINCIPAL KEYTYPE KEY for each trusted key")


def store_signers(paths: Paths, text: str) -> str:
    """Keep the text of an allowed-signers file as the node's; return where.

    Raises:
        OSError: the state folder cannot be created or written.
    """
    made_state_folder(paths)
    write_private_file(trust_path(paths), text)
    return trust_path(paths)
