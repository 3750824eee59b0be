"""Whether Plancton is installed on this host (by ./install): the install tests would replace
such an installation, so the suite stops first, in one line, and never touches it.

Only the standard library: tests/run asks this before the test environment exists
(``python3 -m tests.support.installed``: exit 0 when nothing is installed, 2 with the line when it is).
"""

import os
import pwd
import sys

SERVICE_USER = "plancton"
#: What ./install leaves on a host, and ./install --uninstall --purge removes.
TRACES = (
    "/opt/plancton",
    "/etc/plancton",
    "/var/log/plancton",
    "/var/lib/plancton",
    "/run/plancton",
    "/etc/cron.d/plancton",
    "/etc/systemd/system/plancton.service",
    "/etc/systemd/system/plancton.slice",
    "/usr/local/bin/planctonctl",
)
EXIT_INSTALLED = 2


def installation_traces() -> list[str]:
    """Return what an installation of Plancton left on this host: its paths, and its user."""
    found = [path for path in TRACES if os.path.lexists(path)]
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return found
    return [*found, f"the user {SERVICE_USER}"]


def refusal(traces: list[str]) -> str:
    """Given an installation's traces, return the one line that says why the install tests
    do not run and what to do."""
    return (
        f"Plancton is installed on this host ({', '.join(traces)}) and the install tests would replace it: "
        "remove it first with ./install --uninstall --purge (this deletes /etc/plancton, /var/log/plancton "
        "and the ledger in /var/lib/plancton), "
        "or keep it and run the suite without them: ./tests/run --ignore=tests/test_install.py"
    )


def main() -> int:
    """Print the refusal and return 2 when Plancton is installed here; return 0 when not."""
    traces = installation_traces()
    if not traces:
        return 0
    print(f"tests/run: {refusal(traces)}", file=sys.stderr)
    return EXIT_INSTALLED


if __name__ == "__main__":
    sys.exit(main())
