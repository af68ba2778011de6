"""The upcoming-24-hours timeline, drawn on the server as plain SVG.

One lane per job, one mark per occurrence, an hour grid labelled in the
dashboard's zone. No script is needed to read it: every mark carries a
``<title>`` (the browser's tooltip) and every lane label links to its job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from html import escape

WIDTH = 1200
LABEL_WIDTH = 250
RIGHT_MARGIN = 20
AXIS_HEIGHT = 44
LANE_HEIGHT = 26
MAX_LABEL_CHARS = 32


@dataclass(frozen=True, slots=True)
class Lane:
    """One job's row: its label, link, status and occurrences inside the window.

    ``more`` is True when the job has more occurrences in the window than were
    fetched; the rest of its lane is then drawn as a band.
    """

    label: str
    href: str
    job_type: str
    status: str
    occurrences: tuple[datetime, ...]
    more: bool = False


def render_timeline(lanes: Sequence[Lane], start: datetime, end: datetime, zone: tzinfo) -> str:
    """The SVG document (as markup to embed in a page) for ``lanes`` over [start, end)."""
    span = (end - start).total_seconds()
    plot_width = WIDTH - LABEL_WIDTH - RIGHT_MARGIN
    height = AXIS_HEIGHT + LANE_HEIGHT * max(1, len(lanes)) + 8

    def x_of(instant: datetime) -> float:
        offset = (instant - start).total_seconds() / span
        return LABEL_WIDTH + max(0.0, min(1.0, offset)) * plot_width

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" role="img" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'aria-label="Occurrences from {_attr(_local(start, zone))} to {_attr(_local(end, zone))}">'
    ]
    parts.extend(_axis(start, end, zone, x_of, height))
    for index, lane in enumerate(lanes):
        parts.extend(_lane(lane, index, x_of, end, zone, plot_width))
    if not lanes:
        parts.append(
            f'<text class="tl-empty" x="{LABEL_WIDTH + 10}" y="{AXIS_HEIGHT + 18}">'
            "Nothing is scheduled in the next 24 hours.</text>"
        )
    parts.append(
        f'<line class="tl-now" x1="{LABEL_WIDTH}" y1="{AXIS_HEIGHT - 6}" '
        f'x2="{LABEL_WIDTH}" y2="{height - 4}"><title>now</title></line>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def _axis(
    start: datetime,
    end: datetime,
    zone: tzinfo,
    x_of: Callable[[datetime], float],
    height: int,
) -> list[str]:
    parts = [
        f'<line class="tl-axis" x1="{LABEL_WIDTH}" y1="{AXIS_HEIGHT - 4}" '
        f'x2="{WIDTH - RIGHT_MARGIN}" y2="{AXIS_HEIGHT - 4}"/>'
    ]
    # Step in real hours from the first local hour boundary, labelling each in the
    # zone: across a DST change the labels skip or repeat an hour, as clocks do.
    local_start = start.astimezone(zone)
    tick = local_start.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    if tick < start:
        tick += timedelta(hours=1)
    previous_day = local_start.date()
    while tick < end:
        local = tick.astimezone(zone)
        x = x_of(tick)
        parts.append(
            f'<line class="tl-grid" x1="{x:.1f}" y1="{AXIS_HEIGHT - 8}" '
            f'x2="{x:.1f}" y2="{height - 4}"/>'
        )
        if local.date() != previous_day:
            previous_day = local.date()
            parts.append(
                f'<text class="tl-day" x="{x + 3:.1f}" y="14">{_text(local.strftime("%a %d %b"))}</text>'
            )
        if local.hour % 2 == 0:
            parts.append(
                f'<text class="tl-hour" x="{x:.1f}" y="{AXIS_HEIGHT - 12}" text-anchor="middle">'
                f"{_text(local.strftime('%H:%M'))}</text>"
            )
        tick += timedelta(hours=1)
    zone_name = _text(local_start.strftime("%Z") or str(zone))
    parts.append(f'<text class="tl-zone" x="8" y="{AXIS_HEIGHT - 12}">times in {zone_name}</text>')
    return parts


def _lane(
    lane: Lane,
    index: int,
    x_of: Callable[[datetime], float],
    end: datetime,
    zone: tzinfo,
    plot_width: int,
) -> list[str]:
    top = AXIS_HEIGHT + index * LANE_HEIGHT
    middle = top + LANE_HEIGHT / 2
    label = (
        lane.label
        if len(lane.label) <= MAX_LABEL_CHARS
        else lane.label[: MAX_LABEL_CHARS - 1] + "…"
    )
    status = _attr(lane.status)
    parts = [
        f'<g class="tl-lane tl-{status}">',
        f'<rect class="tl-row" x="0" y="{top}" width="{WIDTH}" height="{LANE_HEIGHT}"/>',
        f'<a href="{_attr(lane.href)}"><text class="tl-label" x="8" y="{middle + 4:.1f}">'
        f"{_text(label)}<title>{_text(lane.label)} ({_text(lane.job_type)}, {status})</title>"
        "</text></a>",
    ]
    for occurrence in lane.occurrences:
        x = x_of(occurrence)
        parts.append(
            f'<rect class="tl-mark" x="{x - 1.5:.1f}" y="{top + 5}" width="3" '
            f'height="{LANE_HEIGHT - 10}"><title>{_text(lane.label)} at '
            f"{_text(_local(occurrence, zone))}</title></rect>"
        )
    if lane.more and lane.occurrences:
        band_start = x_of(lane.occurrences[-1])
        band_end = x_of(end)
        parts.append(
            f'<rect class="tl-band" x="{band_start:.1f}" y="{top + 9}" '
            f'width="{max(1.0, band_end - band_start):.1f}" height="{LANE_HEIGHT - 18}">'
            f"<title>{_text(lane.label)}: more than {len(lane.occurrences)} occurrences "
            "in the next 24 hours</title></rect>"
        )
    parts.append("</g>")
    return parts


def _local(instant: datetime, zone: tzinfo) -> str:
    return instant.astimezone(zone).strftime("%a %d %b %H:%M:%S %Z")


def _text(value: str) -> str:
    return escape(value, quote=False)


def _attr(value: str) -> str:
    return escape(value, quote=True)
