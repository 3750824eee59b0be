"""Battery and input-device sensing against fake sysfs and /dev folders (real files, real stat)."""

import logging
import os
from datetime import datetime
from pathlib import Path

import pytest

from plancton.platform.presence import PowerReader, PresenceSensor, input_device_reading

NOW = 1_800_000_000.0


def supply(root: Path, name: str, **files: str) -> None:
    """Write one power_supply entry with these attribute files."""
    folder = root / name
    folder.mkdir(parents=True)
    for attribute, content in files.items():
        (folder / attribute).write_text(content + "\n")


def test_no_power_supply_at_all_is_mains(tmp_path: Path) -> None:
    assert not PowerReader(str(tmp_path / "missing")).on_battery()
    assert not PowerReader(str(tmp_path)).on_battery()


def test_a_discharging_battery_without_mains_is_battery(tmp_path: Path) -> None:
    supply(tmp_path, "BAT0", type="Battery", status="Discharging")
    supply(tmp_path, "AC", type="Mains", online="0")
    assert PowerReader(str(tmp_path)).on_battery()


def test_mains_online_wins_over_a_discharging_battery(tmp_path: Path) -> None:
    supply(tmp_path, "BAT0", type="Battery", status="Discharging")
    supply(tmp_path, "AC", type="Mains", online="1")
    assert not PowerReader(str(tmp_path)).on_battery()


def test_a_charging_or_full_battery_is_mains(tmp_path: Path) -> None:
    supply(tmp_path, "BAT0", type="Battery", status="Charging")
    supply(tmp_path, "BAT1", type="Battery", status="Full")
    supply(tmp_path, "hidpp_battery_0", type="USB", online="0")
    assert not PowerReader(str(tmp_path)).on_battery()


def test_a_malformed_entry_is_skipped_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    supply(tmp_path, "AC", type="Mains", online="maybe")
    supply(tmp_path, "BAT0", type="Battery", status="Discharging")
    supply(tmp_path, "broken")  # no type file
    reader = PowerReader(str(tmp_path))
    with caplog.at_level(logging.WARNING):
        assert reader.on_battery()  # the malformed mains does not count as online
        assert reader.on_battery()
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert any("AC skipped" in warning and "'maybe'" in warning for warning in warnings)
    assert any("broken skipped" in warning for warning in warnings)


def test_readable_input_devices_tell_the_last_input(tmp_path: Path) -> None:
    assert input_device_reading(NOW, str(tmp_path)) is None
    folder = tmp_path / "input"
    folder.mkdir()
    for name, atime in (("event0", NOW - 300), ("event1", NOW - 12), ("mice", NOW - 1)):
        (folder / name).write_text("")
        os.utime(folder / name, (atime, atime))
    reading = input_device_reading(NOW, str(tmp_path))
    assert reading is not None
    assert reading.seconds == pytest.approx(12) and reading.source == "input devices"


def test_sensor_without_any_input_source_says_so_once_and_counts_the_owner_present(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No D-Bus (the address leads nowhere), no terminal under the fake /dev, no input device."""
    supply(tmp_path / "power", "BAT0", type="Battery", status="Discharging")
    with caplog.at_level(logging.INFO):
        sensor = PresenceSensor(
            input_idle=60,
            run_on_battery=False,
            power_supply_root=str(tmp_path / "power"),
            device_root=str(tmp_path / "dev"),
            bus=f"unix:path={tmp_path}/no-bus",
        )
        try:
            first, second = sensor.sample(NOW), sensor.sample(NOW + 5)
            # input_idle off, then set anew by a reload: the admin is told again, once
            sensor.configure(0, False)
            sensor.sample(NOW + 10)
            sensor.configure(60, False)
            sensor.sample(NOW + 15)
            sensor.sample(NOW + 20)
        finally:
            sensor.close()
    assert first.input_idle_seconds is None and second.input_idle_seconds is None
    assert first.on_battery
    assert first.local_time == datetime.fromtimestamp(NOW)
    messages = [record.getMessage() for record in caplog.records]
    assert sum("nothing tells when a keyboard" in message for message in messages) == 2
    assert sum("cannot follow logind" in message for message in messages) == 1


def test_sensor_with_input_idle_off_reads_no_input_and_run_on_battery_skips_the_battery(tmp_path: Path) -> None:
    supply(tmp_path / "power", "BAT0", type="Battery", status="Discharging")
    sensor = PresenceSensor(input_idle=0, run_on_battery=True, power_supply_root=str(tmp_path / "power"))
    presence = sensor.sample(NOW)
    sensor.close()
    assert presence.input_idle_seconds is None and not presence.on_battery
