"""The one definition of ``metrics_listen``, the address of the Prometheus endpoint.

Its parser, the address it names, and whether that address is reachable from other hosts.

The rule: what is written is where Plancton listens, and only loopback is ever implied.

- ``9810`` or ``":9810"`` (a port alone) listens on loopback, ``127.0.0.1:9810``;
- ``127.0.0.1:9810``, ``localhost:9810`` and ``[::1]:9810`` listen on loopback;
- any other address must be an IP address written out in full, such as ``10.0.0.5:9810``,
  ``0.0.0.0:9810`` (every IPv4 interface) or ``[::]:9810`` (every interface);
- host names other than ``localhost`` are refused: they may resolve to anything, at any time.
"""

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

#: The port Plancton's endpoint uses in examples and documentation.
EXAMPLE_PORT = 9810
EXAMPLE = f'"127.0.0.1:{EXAMPLE_PORT}"'
_DIGITS = re.compile(r"[0-9]{1,5}")
_FORM = re.compile(r"(?:\[(?P<bracketed>[^\]]*)\]|(?P<host>[^:\[\]]*)):(?P<port>[^:]*)")
_FIX = (
    f"write HOST:PORT such as {EXAMPLE} (a port alone listens on loopback; "
    f'write "0.0.0.0:{EXAMPLE_PORT}" to listen on every interface)'
)


@dataclass(frozen=True)
class ListenAddress:
    """An IP address and TCP port to listen on."""

    host: str
    port: int

    @property
    def loopback(self) -> bool:
        """Whether only this host can connect (127.0.0.0/8 or ::1)."""
        return ipaddress.ip_address(self.host).is_loopback

    def __str__(self) -> str:
        """Return the address as written in the configuration: ``host:port``, ``[v6]:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_listen_address(value: Any) -> ListenAddress:
    """Given a port (a number, or text such as ``":9810"``) or ``HOST:PORT`` text, return the
    address to listen on; a port alone means loopback, 127.0.0.1.

    Raises:
        ValueError: the value is neither; the message says what is wrong and how to write it.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return ListenAddress("127.0.0.1", _port(str(value)))
    if not isinstance(value, str):
        raise ValueError(f"{_FIX}, got {type(value).__name__}")
    text = value.strip()
    if _DIGITS.fullmatch(text):
        return ListenAddress("127.0.0.1", _port(text))
    match = _FORM.fullmatch(text)
    if match is None:
        if text.count(":") > 1:
            raise ValueError(f"an IPv6 address goes in brackets, such as [::1]:{EXAMPLE_PORT}, got {text!r}")
        raise ValueError(f"{_FIX}, got {text!r}")
    host = match["bracketed"] if match["bracketed"] is not None else match["host"]
    return ListenAddress(_host(host, bracketed=match["bracketed"] is not None), _port(match["port"]))


def _host(text: str, bracketed: bool) -> str:
    """Given the host part, return its IP address (127.0.0.1 for nothing or ``localhost``)."""
    if (not text and not bracketed) or text == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an IP address: write the address of the interface to listen on, "
            f"such as 127.0.0.1 (this host only), 10.0.0.5, or 0.0.0.0 (every interface)"
        ) from None
    if address.version == 6 and not bracketed:
        raise ValueError(f"an IPv6 address goes in brackets, such as [{address}]:{EXAMPLE_PORT}")
    if address.version == 4 and bracketed:
        raise ValueError(f"only an IPv6 address goes in brackets: write {address}:PORT")
    return str(address)


def _port(text: str) -> int:
    """Given the port part, return it as a number from 1 to 65535."""
    if not _DIGITS.fullmatch(text) or not 0 < int(text) < 65536:
        raise ValueError(f"expected a port from 1 to 65535 after the colon, got {text!r}; {_FIX}")
    return int(text)
