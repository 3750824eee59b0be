"""The one definition of an InfluxDB URL, ``scheme://[user:password@]host:port#database``:
its parser, the target it names, and the masking of its password for display and logs.
"""

import re
from dataclasses import dataclass, field

#: scheme://[user[:password]@]host:port#database
INFLUXDB_URL = re.compile(
    r"(?P<scheme>https?|insecure_https)://(?:(?P<user>[^:@/\s]+)(?::(?P<password>[^@/\s]*))?@)?"
    r"(?P<host>[^:@/\s]+):(?P<port>\d{1,5})#(?P<database>\S+)"
)
EXAMPLE = '"https://user:password@host:8086#database"'


def mask_credentials(url: str) -> str:
    """Given an InfluxDB URL (valid or not), return it with any password replaced by ``****``."""
    match = INFLUXDB_URL.fullmatch(url)
    if match is None:
        # not a valid URL: hide everything that could be a password, to be safe
        return re.sub(r"(://[^:@/\s]*:)\S*@", r"\1****@", url)
    if match.group("password") is None:
        return url
    start, end = match.span("password")
    return f"{url[:start]}****{url[end:]}"


@dataclass(frozen=True)
class InfluxTarget:
    """One InfluxDB database to send points to, parsed from an ``influxdb_url``."""

    url: str = field(repr=False)  # holds the password: never shown
    scheme: str
    host: str
    port: int
    database: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def masked(self) -> str:
        """The URL with its password hidden: the only form that may be logged."""
        return mask_credentials(self.url)

    @property
    def tls(self) -> bool:
        """Whether the target is reached over TLS (https or insecure_https)."""
        return self.scheme != "http"

    @property
    def verify_certificate(self) -> bool:
        """Whether the server's certificate is checked (not for insecure_https)."""
        return self.scheme == "https"


def parse_target(url: str) -> InfluxTarget:
    """Given ``scheme://[user:password@]host:port#database``, return the target.

    Raises:
        ValueError: the URL does not have that form or its port is out of range (the message
            shows the URL with its password masked).
    """
    match = INFLUXDB_URL.fullmatch(url)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"not an InfluxDB URL scheme://[user:password@]host:port#database: {mask_credentials(url)}")
    return InfluxTarget(
        url=url,
        scheme=match["scheme"],
        host=match["host"],
        port=int(match["port"]),
        database=match["database"],
        user=match["user"],
        password=match["password"] if match["user"] else None,
    )
