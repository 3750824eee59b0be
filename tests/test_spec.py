"""The container of a pilot: the digest that tells a spare made under another configuration
from one that is what a new pilot would be."""

from plancton.config.loader import parse
from plancton.config.schema import HostFacts
from plancton.engines.spec import LABEL_SPARE, LABEL_SPEC, as_spare, container_spec, spec_digest

FACTS = HostFacts(ncpus=4, ram_bytes=8 * 1024**3, swap_bytes=0)


def spec_under(parent: str = "/plancton", token: str = "abcd", created: float = 0.0, **values: object) -> str:
    config, _ = parse({"docker_cmd": "sleep 60", **values}, FACTS)
    return container_spec(config, parent, "node1.example.org", token, created).labels[LABEL_SPEC]


def test_pilots_of_one_configuration_share_the_digest_whatever_their_name_and_date() -> None:
    assert spec_under(token="abcd", created=0.0) == spec_under(token="ef01", created=1e9)
    assert spec_under(network_mode="bridge", token="abcd") == spec_under(network_mode="bridge", token="ef01")


def test_anything_else_in_the_container_changes_the_digest() -> None:
    first = spec_under()
    for changed in (
        spec_under(docker_cmd="sleep 61"),
        spec_under(docker_image="busybox:1"),
        spec_under(cpus_per_dock=2),
        spec_under(environment={"SITE": "b"}),
        spec_under(binds=["/a:/b"]),
        spec_under(parent="/other"),
    ):
        assert changed != first


def test_a_spare_is_marked_and_keeps_the_digest_of_its_container() -> None:
    config, _ = parse({}, FACTS)
    spec = container_spec(config, "/plancton", "node1", "abcd", 0.0)
    spare = as_spare(spec)
    assert spare.labels[LABEL_SPARE] == "true" and LABEL_SPARE not in spec.labels
    assert spec_digest(spare) == spec_digest(spec) == spec.labels[LABEL_SPEC]
