"""`python -m ingestion report`: one static HTML page of the ledger, charts drawn as inline SVG.

The page needs no server, no script and no network when viewed: it can be mailed, attached to a ticket
or published to S3 as it is. Hover a point for its run, table and value (SVG `<title>`).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from ingestion.observe.audit import LedgerRow, latest
from ingestion.observe.status import TableStatus, human_duration
from ingestion.records import FAILING

# Colour-blind-safe palette (Okabe-Ito), cycled per table.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
STATUS_COLOUR = {
    "landed": "#009E73",
    "up_to_date": "#56B4E9",
    "running": "#E69F00",
    "failed": "#D55E00",
    "locked": "#D55E00",
    "abandoned": "#CC79A7",
}
W, H = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 70, 160, 30, 40

Series = dict[str, list[tuple[datetime, float, str, bool]]]  # table → (run start, value, tooltip, failed)


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 times 10^n at or above `value`: a readable top for the y axis."""
    if value <= 0:
        return 1.0
    step = 10 ** (len(str(int(value))) - 1)
    for m in (1, 2, 5, 10):
        if m * step >= value:
            return float(m * step)
    return float(10 * step)


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 or value == int(value) else f"{value:,.2f}"


def line_chart(title: str, series: Series, unit: str, colours: dict[str, str]) -> str:
    """An SVG line chart of per-table values over time, with axes, gridlines, legend and point tooltips."""
    points = [p for pts in series.values() for p in pts]
    head = f"<figure><figcaption>{_esc(title)}</figcaption>"
    if not points:
        return head + '<p class="empty">no data yet</p></figure>'
    # One slot per run, in time order: runs minutes apart and runs days apart stay equally readable.
    slots = {t: i for i, t in enumerate(sorted({p[0] for p in points}))}
    ymax = _nice_max(max(p[1] for p in points))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(t: datetime) -> float:
        return LEFT + (pw / 2 if len(slots) == 1 else slots[t] / (len(slots) - 1) * pw)

    def y(v: float) -> float:
        return TOP + ph - max(v, 0) / ymax * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
        f'role="img" aria-label="{_esc(title)}">'
    ]
    for i in range(5):  # y gridlines and labels
        v = ymax * i / 4
        parts.append(
            f'<line x1="{LEFT}" y1="{y(v):.1f}" x2="{LEFT + pw}" y2="{y(v):.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{_fmt(v)}</text>'
        )
    parts.append(
        f'<text x="14" y="{TOP + ph / 2}" transform="rotate(-90 14 {TOP + ph / 2})">{_esc(unit)}</text>'
    )
    ticks = list(slots)
    shown = ticks if len(ticks) <= 6 else [ticks[round(i * (len(ticks) - 1) / 5)] for i in range(6)]
    for t in shown:  # x labels
        parts.append(
            f'<text x="{x(t):.1f}" y="{TOP + ph + 16}" text-anchor="middle">{t:%m-%d %H:%M:%S}</text>'
        )
    parts.append(f'<line x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}" class="axis"/>')
    for n, (name, pts) in enumerate(sorted(series.items())):
        colour = colours[name]
        pts = sorted(pts)
        if len(pts) > 1:
            path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v, _, _ in pts)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for t, v, tip, failed in pts:
            ring = (
                ' r="6" stroke="#D55E00" stroke-width="2.5"' if failed else ' r="3.5"'
            )  # failures stand out
            parts.append(
                f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}"{ring} fill="{colour}"><title>{_esc(tip)}</title></circle>'
            )
        ly = TOP + 8 + n * 18
        parts.append(
            f'<rect x="{LEFT + pw + 16}" y="{ly - 9}" width="12" height="12" fill="{colour}"/>'
            f'<text x="{LEFT + pw + 34}" y="{ly + 1}">{_esc(name)}</text>'
        )
    parts.append("</svg>")
    return head + "".join(parts) + "</figure>"


def _series(rows: Sequence[LedgerRow], value: Callable[[LedgerRow], float | None], unit: str) -> Series:
    """Per-table points placed at their run's start (the earliest table start of the run)."""
    run_start: dict[str, datetime] = {}
    for r in rows:
        run_start[r.run_id] = min(r.started_at, run_start.get(r.run_id, r.started_at))
    out: Series = {}
    for r in rows:
        v = value(r)
        if v is None:
            continue
        name = f"{r.source}.{r.table}"
        tip = f"{name} · run {r.run_id} · {r.status} · {_fmt(v)} {unit}"
        out.setdefault(name, []).append((run_start[r.run_id], float(v), tip, r.status in FAILING))
    return out


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{_esc(empty)}</p>'
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _badge(status: str) -> str:
    return f'<span class="badge" style="background:{STATUS_COLOUR.get(status, "#777")}">{_esc(status)}</span>'


def render_html(
    rows: Sequence[LedgerRow],
    statuses: Sequence[TableStatus],
    *,
    pipeline: str,
    lake: str,
    generated_at: datetime,
) -> str:
    """The whole report page: status per table, rows/duration/lag charts, and the failures."""
    runs = [r for r in latest(rows) if r.pipeline == pipeline]
    names = sorted({f"{r.source}.{r.table}" for r in runs} | {s.name for s in statuses})
    colours = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    closed = [r for r in runs if r.status != "running"]
    charts = [
        line_chart(
            "Rows landed per run (failed runs ringed in red)",
            _series(closed, lambda r: r.rows_landed, "rows"),
            "rows",
            colours,
        ),
        line_chart(
            "Duration per table (seconds)",
            _series(closed, lambda r: r.duration_seconds, "s"),
            "seconds",
            colours,
        ),
        line_chart(
            "Watermark lag at the end of each run (hours)",
            _series(closed, lambda r: None if r.lag_seconds is None else r.lag_seconds / 3600, "h"),
            "hours",
            colours,
        ),
    ]
    status_rows = [
        (
            _esc(s.name),
            _badge(s.last_status),
            _esc(s.last_run_id or ""),
            _esc(f"{s.last_started_at:%Y-%m-%d %H:%M:%S}" if s.last_started_at else ""),
            f"{s.rows_landed:,}",
            _esc(s.watermark or ""),
            _esc(human_duration(s.lag_seconds)),
            _esc(s.last_error or ""),
        )
        for s in statuses
    ]
    failures = [
        (
            _esc(f"{r.started_at:%Y-%m-%d %H:%M:%S}"),
            _esc(r.run_id),
            _esc(f"{r.source}.{r.table}"),
            _badge(r.status),
            _esc(r.error_class or ""),
            _esc(r.error_message or ""),
        )
        for r in reversed(runs)
        if r.status in FAILING
    ]
    n_runs = len({r.run_id for r in runs})
    n_failed = len({r.run_id for r in runs if r.status in FAILING})
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tidemark · {_esc(pipeline)} · run report</title>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; background: #fff; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }} h2 {{ font-size: 17px; margin: 28px 0 8px; }}
.meta {{ color: #666; margin-bottom: 12px; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: 4px 8px; border-bottom: 1px solid #ddd; vertical-align: top; }}
td:last-child {{ overflow-wrap: anywhere; min-width: 16em; }}
th {{ background: #f4f4f4; }}
td:nth-child(5) {{ text-align: right; }}
.badge {{ color: #fff; border-radius: 4px; padding: 1px 6px; font-size: 12px; white-space: nowrap; }}
figure {{ margin: 16px 0; }} figcaption {{ font-weight: 600; margin-bottom: 4px; }}
svg text {{ font-size: 11px; fill: #444; }} svg .grid {{ stroke: #e5e5e5; }} svg .axis {{ stroke: #999; }}
.empty {{ color: #777; font-style: italic; }}
</style></head>
<body>
<h1>tidemark run report · pipeline {_esc(pipeline)}</h1>
<div class="meta">lake {_esc(lake)} · {n_runs} runs, {n_failed} with failures · generated
{generated_at:%Y-%m-%d %H:%M:%S} UTC</div>
<h2>Tables now</h2>
{_table(("table", "last status", "last run", "started (UTC)", "rows landed", "watermark", "lag", "last error"), status_rows, "no tables configured")}
<h2>Runs over time</h2>
{"".join(charts)}
<h2>Failures</h2>
{_table(("started (UTC)", "run", "table", "status", "error class", "message"), failures, "no failed, locked or abandoned runs")}
</body></html>
"""


def write_report(path: Path, page: str) -> Path:
    """Write the page (parents created) and return its absolute path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path.resolve()
