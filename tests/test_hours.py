"""``run_hours``: parsing the windows, and whether a given local time falls inside them."""

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plancton.config.display import describe
from plancton.config.hours import parse_windows
from plancton.config.loader import parse
from plancton.config.schema import HostFacts
from plancton.core import hours
from plancton.errors import ConfigError

FACTS = HostFacts(ncpus=4, ram_bytes=16 * 1024**3, swap_bytes=0)
EVENINGS_AND_WEEKENDS = parse_windows(["Mon-Fri 18:00-08:00", "Sat,Sun"])
# 2026-11-23 is a Monday
MONDAY = datetime(2026, 11, 23)


def at(day: int, clock: str) -> datetime:
    """The local time on the day ``day`` of that week (0: Monday, 7: the next Monday)."""
    hour, minute = (int(part) for part in clock.split(":"))
    return MONDAY + timedelta(days=day, hours=hour, minutes=minute)


@pytest.mark.parametrize(
    ("moment", "inside"),
    [
        (at(0, "07:59"), False),  # Monday morning: Sunday's window ended at midnight
        (at(0, "12:00"), False),
        (at(0, "18:00"), True),
        (at(1, "00:30"), True),  # past midnight, still Monday's evening window
        (at(1, "07:59"), True),
        (at(1, "08:00"), False),
        (at(4, "23:59"), True),  # Friday night
        (at(5, "07:00"), True),  # Saturday
        (at(5, "12:00"), True),
        (at(6, "23:59"), True),  # Sunday night
        (at(7, "00:00"), False),  # the week's end is over
    ],
)
def test_evenings_and_weekends(moment: datetime, inside: bool) -> None:
    assert hours.allowed(EVENINGS_AND_WEEKENDS, moment) is inside


def test_a_window_past_midnight_belongs_to_the_day_it_starts() -> None:
    friday_night = parse_windows(["Fri 22:00-06:00"])
    assert hours.allowed(friday_night, at(5, "05:00"))  # Saturday 05:00
    assert not hours.allowed(friday_night, at(4, "05:00"))  # Friday 05:00
    assert not hours.allowed(friday_night, at(5, "22:30"))


def test_day_ranges_wrap_over_the_week_end_and_times_alone_mean_every_day() -> None:
    (window,) = parse_windows("Fri-Mon")
    assert window.days == frozenset({4, 5, 6, 0})
    lunch = parse_windows(["12:00-14:00"])
    assert all(hours.allowed(lunch, at(day, "13:00")) for day in range(7))
    assert not hours.allowed(lunch, at(2, "14:00"))
    until_midnight = parse_windows(["sat 20:00-24:00"])
    assert hours.allowed(until_midnight, at(5, "23:59")) and not hours.allowed(until_midnight, at(6, "00:00"))


def test_no_windows_means_always() -> None:
    assert hours.allowed((), at(2, "03:00"))
    assert hours.next_change((), at(2, "03:00")) is None
    assert hours.next_change(parse_windows(["Mon-Sun"]), at(2, "03:00")) is None


def test_next_change_across_midnight_and_the_week_end() -> None:
    assert hours.next_change(EVENINGS_AND_WEEKENDS, at(0, "12:00")) == at(0, "18:00")
    assert hours.next_change(EVENINGS_AND_WEEKENDS, at(1, "02:00")) == at(1, "08:00")
    # from Friday evening through the weekend, the next change is Monday 00:00
    assert hours.next_change(EVENINGS_AND_WEEKENDS, at(4, "19:00")) == at(7, "00:00")
    assert hours.describe_moment(at(7, "00:00"), at(4, "19:00")) == "Mon 00:00"
    assert hours.describe_moment(at(0, "18:00"), at(0, "12:00")) == "18:00"


@given(st.integers(0, 7 * 24 * 60 - 1))
def test_next_change_is_the_first_minute_that_differs(minute: int) -> None:
    moment = MONDAY + timedelta(minutes=minute)
    change = hours.next_change(EVENINGS_AND_WEEKENDS, moment)
    assert change is not None and change > moment
    now = hours.allowed(EVENINGS_AND_WEEKENDS, moment)
    assert hours.allowed(EVENINGS_AND_WEEKENDS, change) is not now
    assert hours.allowed(EVENINGS_AND_WEEKENDS, change - timedelta(minutes=1)) is now


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("Mon-Fri 25:00-08:00", 'expected times from 00:00 to 24:00 in "Mon-Fri 25:00-08:00", got 25:00'),
        ("Mon-Fri 18:61-08:00", "got 18:61"),
        ("Mon-Fry 18:00-08:00", 'unknown day "Fry" in "Mon-Fry 18:00-08:00"'),
        ("Weekend", 'unknown day "Weekend"'),
        ("Mon 10:00-10:00", "expected a start and an end that differ"),
        ("Mon-", 'expected days such as Mon-Fri or Sat,Sun in "Mon-", got "Mon-"'),
        ("Mon Tue 10:00-11:00", "expected a window such as"),
        ("", "expected a window such as"),
    ],
)
def test_config_names_the_malformed_entry(entry: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse({"run_hours": ["Sat,Sun", entry]}, FACTS, source="/etc/plancton/config.yaml")
    text = raised.value.describe()
    assert "/etc/plancton/config.yaml" in text and "run_hours" in text
    assert message in text


def test_config_keys_defaults_and_display() -> None:
    config, _ = parse({}, FACTS)
    assert (config.input_idle, config.run_on_battery, config.run_hours) == (0.0, False, ())
    config, _ = parse(
        {"input_idle": "2m", "run_on_battery": True, "run_hours": ["Mon-Fri 18:00-08:00", "Sat,Sun"]}, FACTS
    )
    assert config.input_idle == 120.0 and config.run_on_battery
    assert [window.text for window in config.run_hours] == ["Mon-Fri 18:00-08:00", "Sat,Sun"]
    shown = {name: (value, origin) for name, value, origin in describe(config)}
    assert shown["run_hours"] == (["Mon-Fri 18:00-08:00", "Sat,Sun"], "file")
    assert shown["input_idle"] == (120, "file") and shown["run_on_battery"] == (True, "file")
    with pytest.raises(ConfigError):
        parse({"run_on_battery": "yes"}, FACTS)
    with pytest.raises(ConfigError):
        parse({"input_idle": -1}, FACTS)
