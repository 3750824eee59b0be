"""The host watched between loops: the loop is woken as soon as the owner's CPU crosses a
threshold, and decides on the last half second rather than on an average since its last turn."""

import threading

from plancton.config.loader import parse
from plancton.config.schema import Config, HostFacts
from plancton.core.policy import HostSample
from plancton.daemon.host_watch import HostWatch
from tests.support import services


def config_of(**values: object) -> Config:
    config, _ = parse(values, HostFacts(ncpus=2, ram_bytes=2**34, swap_bytes=0))
    return config


class ScriptedHost:
    """A host whose owner uses the cores the test sets (Plancton's own Sensor protocol)."""

    def __init__(self) -> None:
        self.owner_cores = 0.0
        self.samples = 0

    def sample(self) -> HostSample:
        self.samples += 1
        return HostSample(ncpus=2, busy_cores=self.owner_cores, pilots_cores=0.0, available_bytes=2**33)


def test_the_loop_is_woken_when_the_owner_starts_and_stops_being_busy() -> None:
    host, woken = ScriptedHost(), threading.Event()
    watch = HostWatch(host, woken.set, interval=0.01)
    config = config_of(owner_busy_percent=40, owner_idle_percent=20)
    watch.expect(False, config)
    watch.start()
    try:
        services.poll(lambda: host.samples >= 3, 5, "a few samples", 0.01)
        assert not woken.is_set()
        host.owner_cores = 1.0  # 50% of the host: busy
        services.poll(woken.is_set, 5, "the loop woken", 0.01)
        assert watch.sample().owner_percent == 50
        woken.clear()
        # woken once: until the loop has decided, the same change does not wake it again
        seen = host.samples
        services.poll(lambda: host.samples >= seen + 3, 5, "a few more samples", 0.01)
        assert not woken.is_set()
        watch.expect(True, config)
        host.owner_cores = 0.6  # 30%: between the thresholds, still busy
        services.poll(lambda: watch.sample().owner_percent == 30, 5, "the new sample", 0.01)
        assert not woken.is_set()
        host.owner_cores = 0.2  # 10%: idle again
        services.poll(woken.is_set, 5, "the loop woken", 0.01)
    finally:
        watch.stop()


def test_without_its_thread_the_watch_samples_when_asked() -> None:
    host = ScriptedHost()
    watch = HostWatch(host, lambda: None)
    host.owner_cores = 2.0
    assert watch.sample().owner_percent == 100 and host.samples == 1
