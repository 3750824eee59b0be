"""InfluxDB URLs: what a URL names (server, database or bucket, user, password or token), and
that a password or token never shows."""

import pytest

from plancton.config.influxdb_url import mask_credentials, parse_target
from plancton.config.loader import parse
from plancton.config.schema import HostFacts

TOKEN = "s3cr3t-Token_with/slash=="
FACTS = HostFacts(ncpus=4, ram_bytes=2**34, swap_bytes=0)


def test_url_is_parsed_and_masked() -> None:
    target = parse_target("insecure_https://writer:s3cr:et@influx.example.org:8086#plancton")
    assert (target.user, target.password, target.host, target.port) == ("writer", "s3cr:et", "influx.example.org", 8086)
    assert target.database == "plancton"
    assert target.tls and not target.verify_certificate
    assert target.masked == "insecure_https://writer:****@influx.example.org:8086#plancton"
    assert "s3cr:et" not in repr(target)
    plain = parse_target("http://db:8086#m")
    assert (plain.user, plain.password, plain.tls) == (None, None, False)
    assert parse_target("https://db:8086#m").verify_certificate


def test_bad_url_message_hides_the_password() -> None:
    with pytest.raises(ValueError, match=r"\*\*\*\*") as error:
        parse_target("http://user:secret@db:99999#m")
    assert "secret" not in str(error.value)


def test_influxdb_passwords_are_masked() -> None:
    mask = mask_credentials
    assert mask("https://plancton:s3cret@influx:8086#farm") == "https://plancton:****@influx:8086#farm"
    assert mask("http://influx:8086#farm") == "http://influx:8086#farm"
    assert mask("http://reader@influx:8086#farm") == "http://reader@influx:8086#farm"
    # "@" in the database name is not a password
    assert mask("http://influx:8086#db@x") == "http://influx:8086#db@x"
    assert mask("https://u:p#w@influx:8086#farm") == "https://u:****@influx:8086#farm"
    # an invalid URL still hides what could be a password
    assert "s3cret" not in mask("https://u:s3cret@influx#farm")


def test_a_token_url_names_a_bucket_and_hides_the_token() -> None:
    url = f"https://:{TOKEN}@influx.example.org:8086#farm"
    target = parse_target(url)
    assert (target.token, target.user, target.password, target.database) == (TOKEN, None, None, "farm")
    assert mask_credentials(url) == "https://:****@influx.example.org:8086#farm"
    assert TOKEN not in repr(target)
    config, _ = parse({"influxdb_url": url}, FACTS)
    assert config.influxdb_url == (url,)
    with pytest.raises(ValueError, match="no user name and no token"):
        parse_target("https://:@influx.example.org:8086#farm")
