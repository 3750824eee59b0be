"""The one definition of an InfluxDB URL: its parser, the target it names, its masked form.

The URL is ``scheme://[user:password@]host:port#database``; its password is masked for
display and logs.

An empty user name before the password, ``scheme://:TOKEN@host:port#bucket``, makes the
password an API token, sent as ``Authorization: Token TOKEN``: the form InfluxDB 2 and 3
accept on their v1-compatible ``/write``, where the database names a bucket (InfluxDB 2: a
bucket of that name, or a DBRP mapping of it; InfluxDB 3: the database).
"""

import re
from dataclasses import dataclass, field

#: scheme://[user[:password]@]host:port#database
INFLUXDB_URL = re.compile(
    r"(?P<scheme>https?|insecure_https)://(?:(?P<user>[^:@/\s]*)(?::(?P<password>[^@\s]*))?@)?"
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
    token: str | None = field(default=None, repr=False)  # an API token, instead of user and password

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
    """Given ``scheme://[user:password@]host:port#database``, or ``scheme://:TOKEN@host:port#bucket``
    with an API token, return the target.

    Raises:
        ValueError: the URL does not have that form, its port is out of range, or it has an
            empty user name without a token (the message shows the URL with its password masked).
    """
    match = INFLUXDB_URL.fullmatch(url)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"not an InfluxDB URL scheme://[user:password@]host:port#database: {mask_credentials(url)}")
    with_token = match["user"] == ""
    if with_token and not match["password"]:
        raise ValueError(f"no user name and no token before the @: {mask_credentials(url)}")
    return InfluxTarget(
        url=url,
        scheme=match["scheme"],
        host=match["host"],
        port=int(match["port"]),
        database=match["database"],
        user=match["user"] or None,
        password=match["password"] if match["user"] else None,
        token=match["password"] if with_token else None,
    )
