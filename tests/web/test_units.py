"""The dashboard's pure parts: config loading, the SVG timeline, formatting."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from nexus_schedd.errors import ConfigError
from nexus_schedd.model import Recurrence, RecurrenceKind
from nexus_schedd.web.config import DEFAULT_LISTEN, WebConfig, load_config, parse_listen
from nexus_schedd.web.formatting import describe_recurrence, format_duration, format_relative
from nexus_schedd.web.timeline import Lane, render_timeline


def test_defaults_are_read_only_on_loopback_8470() -> None:
    config = load_config(None)
    assert config.listen == DEFAULT_LISTEN == "127.0.0.1:8470"
    assert not config.actions_enabled and config.token is None


def test_config_file_sets_every_key_and_command_line_overrides_listen_and_socket(
    tmp_path: Path,
) -> None:
    (tmp_path / "token").write_text("from-a-file\n")
    path = tmp_path / "web.toml"
    path.write_text(
        "[web]\n"
        'listen = "[::1]:9000"\n'
        'socket = "/run/x.sock"\n'
        "actions_enabled = true\n"
        'token_file = "token"\n'
        'trust_proxy_header = "X-Remote-User"\n'
        'timezone = "Europe/Berlin"\n'
        'log_format = "json"\n'
        'log_level = "debug"\n'
    )
    config = load_config(path)
    assert config.token == "from-a-file" and config.trust_proxy_header == "X-Remote-User"
    assert parse_listen(config.listen) == ("::1", 9000)
    overridden = config.with_overrides(listen="0.0.0.0:1234", socket=None)
    assert overridden.listen == "0.0.0.0:1234" and overridden.socket == "/run/x.sock"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[web]\nport = 1\n", "web.port"),
        ("[daemon]\nsocket = 'x'\n", "daemon"),
        ("[web]\nactions_enabled = 'yes'\n", "web.actions_enabled"),
        ("[web]\nactions_enabled = true\n", "web.actions_enabled"),
        ("[web]\nlisten = '127.0.0.1'\n", "web.listen"),
        ("[web]\nlisten = 'host:99999'\n", "web.listen"),
        ("[web]\ntimezone = 'Mars/Olympus'\n", "web.timezone"),
        ("[web]\nlog_level = 'loud'\n", "web.log_level"),
        ("[web]\ntoken = 'a'\ntoken_file = 'b'\n", "web.token_file"),
        ("[web\n", ""),
    ],
)
def test_bad_config_names_the_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "web.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.file == str(path) and caught.value.key == key


def test_actions_without_any_authentication_are_refused() -> None:
    with pytest.raises(ConfigError, match="token or trust_proxy_header"):
        WebConfig(actions_enabled=True)


def lane(label: str, *occurrences: datetime, more: bool = False) -> Lane:
    return Lane(label, f"/jobs/{label}", "log", "pending", tuple(occurrences), more)


def test_timeline_places_marks_by_time_and_escapes_labels() -> None:
    start = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    end = start + timedelta(hours=24)
    svg = render_timeline(
        [lane("<evil>", start + timedelta(hours=6)), lane("b", start, end - timedelta(seconds=1))],
        start,
        end,
        UTC,
    )
    assert "<evil>" not in svg and "&lt;evil&gt;" in svg
    xs = [float(x) for x in re.findall(r'class="tl-mark" x="([0-9.]+)"', svg)]
    # Label column 250 px, plot 930 px: 6 h is a quarter of the way.
    assert xs[0] == pytest.approx(250 + 930 / 4 - 1.5)
    assert xs[1] == pytest.approx(250 - 1.5)
    assert xs[2] == pytest.approx(250 + 930 - 1.5, abs=0.1)
    assert svg.count('class="tl-hour"') == 12


def test_timeline_hour_labels_follow_a_dst_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # 2026-03-29: clocks jump from 02:00 to 03:00 in Berlin.
    start = datetime(2026, 3, 28, 12, 0, tzinfo=berlin)
    svg = render_timeline([], start, start + timedelta(hours=24), berlin)
    hours = re.findall(r'class="tl-hour"[^>]*>([0-9:]+)<', svg)
    assert "02:00" not in hours
    assert hours[:8] == ["12:00", "14:00", "16:00", "18:00", "20:00", "22:00", "00:00", "04:00"]
    assert "Nothing is scheduled" in svg and "Sun 29 Mar" in svg


def test_timeline_draws_a_band_for_more_occurrences_than_fetched() -> None:
    start = datetime(2026, 1, 10, tzinfo=UTC)
    svg = render_timeline([lane("fast", start, more=True)], start, start + timedelta(days=1), UTC)
    assert 'class="tl-band"' in svg and "more than 1 occurrences" in svg


def test_formatting_of_durations_relative_times_and_recurrences() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert format_duration(0.5) == "500 µs"
    assert format_duration(12.34) == "12.3 ms"
    assert format_duration(4200) == "4.2 s"
    assert format_duration(185_000) == "3 min 5 s"
    assert format_relative(now + timedelta(minutes=5), now) == "in 5 min"
    assert format_relative(now - timedelta(seconds=3), now) == "3 s ago"
    assert (
        describe_recurrence(Recurrence(RecurrenceKind.HOURLY, interval=2)) == "every 2 hours (UTC)"
    )
    cron = Recurrence(RecurrenceKind.CRON, cron="0 9 * * 1-5", timezone="Europe/Berlin")
    assert describe_recurrence(cron) == "cron 0 9 * * 1-5 (Europe/Berlin)"
    assert describe_recurrence(None) == "once"
    closed = Recurrence(RecurrenceKind.DAILY, exclude=("holidays-de", "outing"))
    assert describe_recurrence(closed) == "every day (UTC), except on holidays-de, outing"
