import pytest
from hypothesis import given
from hypothesis import strategies as st

from topology.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("250ms", 250),
        ("1s", 1000),
        ("1.5s", 1500),
        ("15m", 900_000),
        ("1h30m", 5_400_000),
        ("7d", 604_800_000),
        (" 2 h ", 7_200_000),
        (3, 3000),
        (0.25, 250),
        ("0s", 0),
    ],
)
def test_parse_duration_reads_units_and_bare_seconds(text: object, ms: int):
    assert parse_duration(text) == ms


@pytest.mark.parametrize("bad", ["", "1", "1x", "s", "1s2", "-1s", True, None, [1], -5])
def test_parse_duration_refuses_non_durations_with_the_accepted_forms(bad: object):
    with pytest.raises(ValueError, match=r"duration|negative"):
        parse_duration(bad)


@given(st.integers(min_value=0, max_value=10**12))
def test_format_then_parse_round_trips_when_given_any_millisecond_count(ms: int):
    assert parse_duration(format_duration(ms)) == ms
