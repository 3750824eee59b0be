"""The host sensor: the pressure files it reads, and a sample of this host."""

import os

from plancton.platform.cgroups import PilotCgroup
from plancton.platform.host import HostSensor, read_pressure
from tests.support.file_trees import make_tree


def test_pressure_files(tmp_path: "os.PathLike[str]") -> None:
    folder = str(tmp_path)
    make_tree(
        folder,
        {
            "cpu": "some avg10=12.50 avg60=3.00 avg300=1.00 total=123\nfull avg10=0.00 avg60=0 avg300=0 total=0\n",
            "memory": "some avg10=1.00 avg60=0.00 avg300=0.00 total=1\nfull avg10=40.25 avg60=0.00 avg300=0 total=9\n",
        },
    )
    assert read_pressure("cpu", "some", folder) == 12.5
    assert read_pressure("memory", "full", folder) == 40.25
    assert read_pressure("io", "some", folder) is None


def test_host_sensor_on_this_host() -> None:
    sensor = HostSensor(PilotCgroup("plancton-sensor-test", root="/nonexistent"))
    sample = sensor.sample()
    assert sample.ncpus == os.cpu_count()
    assert 0.0 <= sample.busy_cores <= sample.ncpus
    assert sample.pilots_cores == 0.0  # no accounting readable: no pilot CPU invented
    assert sample.available_bytes > 0
    assert sensor.sample() is sample  # asked again at once: the same sample, not noise
