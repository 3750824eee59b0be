"""How the configuration is shown (``planctonctl config``): every value, where it comes from, and
passwords masked; what it shows reads back as the same configuration."""

import dataclasses

from plancton.config import display
from plancton.config.loader import parse
from plancton.config.schema import KEYS, HostFacts

FACTS = HostFacts(ncpus=8, ram_bytes=16 * 1024**3, swap_bytes=0)


def test_describe_tells_file_values_from_defaults_with_passwords_masked() -> None:
    raw = {"max_dock_mem": "1G", "influxdb_url": "https://u:s3cret@h:8086#db", "environment": {"A": 1}}
    config, _ = parse(raw, FACTS)
    described = {name: (value, origin) for name, value, origin in display.describe(config)}
    assert list(described) == list(KEYS)
    assert described["max_dock_mem"] == ("1G", "file")
    assert described["influxdb_url"] == (["https://u:****@h:8086#db"], "file")
    assert described["environment"] == ({"A": "1"}, "file")
    assert described["mem_floor"] == ("512M", "default")
    assert described["docker_cmd"] == (["sleep", "60"], "default")
    assert described["main_sleep"] == (5, "default")
    assert described["user_group"] == ("65534:65534", "default")


def test_described_values_read_back_as_the_same_configuration() -> None:
    raw = {"max_dock_mem": "1536M", "main_sleep": 0.5, "binds": "/a:/b", "environment": {"X": "y"}, "user_group": None}
    config, _ = parse(raw, FACTS)
    again, _ = parse({name: value for name, value, _ in display.describe(config)}, FACTS)
    assert dataclasses.replace(again, from_file=config.from_file) == config
