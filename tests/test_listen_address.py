"""The address the Prometheus endpoint listens on (``metrics_listen``): a port alone means loopback,
any other address is written out, and a malformed one is named with how to write it."""

import re

import pytest

from plancton.config.listen_address import parse_listen_address
from plancton.config.loader import parse
from plancton.config.schema import HostFacts

FACTS = HostFacts(ncpus=4, ram_bytes=16 * 1024**3, swap_bytes=0)


@pytest.mark.parametrize(
    ("written", "host", "port", "loopback"),
    [
        ("127.0.0.1:9810", "127.0.0.1", 9810, True),
        (9810, "127.0.0.1", 9810, True),
        ("9810", "127.0.0.1", 9810, True),
        (":9810", "127.0.0.1", 9810, True),
        ("localhost:9810", "127.0.0.1", 9810, True),
        ("127.0.0.2:9810", "127.0.0.2", 9810, True),
        ("[::1]:9810", "::1", 9810, True),
        ("0.0.0.0:9810", "0.0.0.0", 9810, False),
        ("10.0.0.5:1", "10.0.0.5", 1, False),
        ("[::]:65535", "::", 65535, False),
    ],
)
def test_a_port_alone_means_loopback_and_any_other_address_is_written_out(
    written: object, host: str, port: int, loopback: bool
) -> None:
    address = parse_listen_address(written)
    assert (address.host, address.port, address.loopback) == (host, port, loopback)
    assert parse_listen_address(str(address)) == address


@pytest.mark.parametrize(
    ("written", "cause", "fix"),
    [
        ("node1.example.org:9810", "is not an IP address", "such as 127.0.0.1"),
        ("127.0.0.1:0", "expected a port from 1 to 65535", 'write HOST:PORT such as "127.0.0.1:9810"'),
        ("127.0.0.1:http", "expected a port from 1 to 65535", "a port alone listens on loopback"),
        ("127.0.0.1", "got '127.0.0.1'", "write HOST:PORT"),
        ("::1:9810", "IPv6 address goes in brackets", "[::1]:9810"),
        ("[127.0.0.1]:9810", "only an IPv6 address goes in brackets", "127.0.0.1:PORT"),
        (True, "got bool", '"0.0.0.0:9810" to listen on every interface'),
    ],
)
def test_a_malformed_address_says_what_is_wrong_and_how_to_write_it(written: object, cause: str, fix: str) -> None:
    with pytest.raises(ValueError, match=re.escape(cause)) as error:
        parse_listen_address(written)
    assert fix in str(error.value)


def test_the_configuration_keeps_the_address_as_written_out() -> None:
    config, _ = parse({"metrics_listen": ":9810", "metrics_textfile": "/var/lib/node/plancton.prom"}, FACTS)
    assert (config.metrics_listen, config.metrics_textfile) == ("127.0.0.1:9810", "/var/lib/node/plancton.prom")
    assert parse({}, FACTS)[0].metrics_listen is None
