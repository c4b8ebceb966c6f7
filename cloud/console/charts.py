"""Charts as inline SVG drawn on the server: no script, no library, readable on a phone.

Every chart scales to its box (``viewBox``, width 100 %), names its numbers in
``<title>`` tooltips, and uses a palette that stays apart for colour-blind eyes.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

PALETTE = ("#0f4c5c", "#e09f3e", "#5b8e7d", "#9e2a2b", "#6d597a", "#3a86a8", "#b5838d",
           "#7a9e3f")
OTHERS = "#b8b2a7"
INK, MUTED, GRID = "#1b262c", "#647279", "#e6e1d8"
# Series drawn separately in a stacked chart; the rest is one grey "others".
MAX_SERIES = 7


def _e(text: object) -> str:
    return str(escape(str(text)))


def _nice(top: float) -> float:
    """A round axis maximum at or above ``top``."""
    if top <= 0:
        return 1.0
    mag = 10 ** (len(str(int(top))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if step * mag >= top:
            return float(step * mag)
    return float(10 * mag)


def _svg(width: int, height: int, body: str, label: str) -> Markup:
    # Every piece of text in ``body`` went through _e (escaped) when it was drawn.
    return Markup(f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '  # noqa: S704
                  f'aria-label="{_e(label)}" xmlns="http://www.w3.org/2000/svg">{body}</svg>')


def _legend(names: Sequence[str], colors: Sequence[str], y: int, width: int) -> str:
    out, x = [], 8.0
    for name, color in zip(names, colors, strict=True):
        w = 22 + 7.2 * len(name)
        if x + w > width:
            x, y = 8.0, y + 20
        out.append(f'<rect x="{x:.0f}" y="{y - 10}" width="12" height="12" rx="2" '
                   f'fill="{color}"/><text x="{x + 17:.0f}" y="{y}" font-size="12" '
                   f'fill="{INK}">{_e(name)}</text>')
        x += w + 10
    return "".join(out)


def stacked_columns(labels: Sequence[str], series: Mapping[str, Sequence[int]],
                    label: str) -> Markup:
    """Columns per label (a day), stacked by series (a location), with a legend below."""
    names = sorted(series, key=lambda n: -sum(series[n]))
    if len(names) > MAX_SERIES:
        keep, rest = names[:MAX_SERIES - 1], names[MAX_SERIES - 1:]
        merged = [sum(series[n][i] for n in rest) for i in range(len(labels))]
        series = {**{n: series[n] for n in keep}, "…": merged}
        names = [*keep, "…"]
    colors = [PALETTE[i % len(PALETTE)] if n != "…" else OTHERS for i, n in enumerate(names)]
    width, height, left, bottom, top = 1100, 300, 44, 236, 16
    totals = [sum(series[n][i] for n in names) for i in range(len(labels))]
    peak = _nice(max(totals, default=0))
    plot_w = width - left - 8
    step = plot_w / max(1, len(labels))
    bar = max(2.0, step * 0.72)
    out = []
    # Gridlines at whole numbers: 250 in 5 steps of 50, 100 in 4 of 25.
    steps = next((k for k in (4, 5, 2) if peak % k == 0), 1)
    for k in range(steps + 1):
        v = peak * k / steps
        y = bottom - (bottom - top) * k / steps
        out.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="{GRID}"/><text x="{left - 6}" y="{y + 4:.1f}" font-size="11" '
                   f'text-anchor="end" fill="{MUTED}">{v:g}</text>')
    every = max(1, round(len(labels) / 10))
    for i, day in enumerate(labels):
        x = left + i * step + (step - bar) / 2
        y = float(bottom)
        for name, color in zip(names, colors, strict=True):
            v = series[name][i]
            if not v:
                continue
            h = (bottom - top) * v / peak
            y -= h
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                       f'fill="{color}"><title>{_e(day)} · {_e(name)}: {v}</title></rect>')
        if i % every == 0:
            out.append(f'<text x="{x + bar / 2:.1f}" y="{bottom + 18}" font-size="12" '
                       f'text-anchor="middle" fill="{MUTED}">{_e(day)}</text>')
    out.append(_legend(names, colors, bottom + 44, width))
    return _svg(width, height + (20 if len(names) > 4 else 0), "".join(out), label)


def hbars(rows: Sequence[tuple[str, int]], label: str, color: str = PALETTE[0],
          unit: str = "", width: int = 540, left: int = 220) -> Markup:
    """Horizontal bars, one per row, value at the end (top lists)."""
    row_h = 26
    most = int(left / 8.6)  # characters that fit left of the bars at 13 px
    height = max(1, len(rows)) * row_h + 8
    peak = max((v for _, v in rows), default=0) or 1
    out = []
    for i, (name, v) in enumerate(rows):
        y = 4 + i * row_h
        w = (width - left - 60) * v / peak
        short = name if len(name) <= most else name[:most - 1] + "…"
        out.append(f'<text x="{left - 8}" y="{y + 17}" font-size="13" text-anchor="end" '
                   f'fill="{INK}"><title>{_e(name)}</title>{_e(short)}</text>'
                   f'<rect x="{left}" y="{y + 4}" width="{max(w, 1):.1f}" height="{row_h - 9}" '
                   f'rx="3" fill="{color}"><title>{_e(name)}: {v}{_e(unit)}</title></rect>'
                   f'<text x="{left + w + 6:.1f}" y="{y + 16}" font-size="12" '
                   f'fill="{MUTED}">{v}{_e(unit)}</text>')
    return _svg(width, height, "".join(out), label)


def paired_bars(rows: Sequence[tuple[str, int, int]], names: tuple[str, str],
                label: str, width: int = 540, left: int = 220) -> Markup:
    """Two bars per row (e.g. readers waiting vs copies owned), with a legend."""
    row_h = 34
    most = int(left / 8.6)  # characters that fit left of the bars at 13 px
    height = max(1, len(rows)) * row_h + 36
    peak = max((max(a, b) for _, a, b in rows), default=0) or 1
    colors = (PALETTE[3], PALETTE[0])
    out = [_legend(list(names), list(colors), 16, width)]
    for i, (name, a, b) in enumerate(rows):
        y = 28 + i * row_h
        short = name if len(name) <= most else name[:most - 1] + "…"
        out.append(f'<text x="{left - 8}" y="{y + 18}" font-size="13" text-anchor="end" '
                   f'fill="{INK}"><title>{_e(name)}</title>{_e(short)}</text>')
        for j, (v, color) in enumerate(((a, colors[0]), (b, colors[1]))):
            w = (width - left - 50) * v / peak
            yy = y + 4 + j * 13
            out.append(f'<rect x="{left}" y="{yy}" width="{max(w, 1):.1f}" height="11" rx="2" '
                       f'fill="{color}"><title>{_e(name)} · {_e(names[j])}: {v}</title></rect>'
                       f'<text x="{left + w + 5:.1f}" y="{yy + 10}" font-size="11" '
                       f'fill="{MUTED}">{v}</text>')
    return _svg(width, height, "".join(out), label)


def heatmap(matrix: Sequence[Sequence[int]], rows: Sequence[str], label: str) -> Markup:
    """Rows (weekdays) × 24 hours, darker where busier."""
    width, left, top, cell_w, cell_h = 1100, 48, 22, 43.5, 28
    peak = max((max(r) for r in matrix), default=0) or 1
    out = []
    for h in range(0, 24, 3):
        out.append(f'<text x="{left + h * cell_w + cell_w / 2:.1f}" y="14" font-size="11" '
                   f'text-anchor="middle" fill="{MUTED}">{h:02d}</text>')
    for r, name in enumerate(rows):
        y = top + r * cell_h
        out.append(f'<text x="{left - 6}" y="{y + 16}" font-size="12" text-anchor="end" '
                   f'fill="{INK}">{_e(name)}</text>')
        for h in range(24):
            v = matrix[r][h]
            alpha = 0.06 + 0.94 * v / peak if v else 0.03
            out.append(f'<rect x="{left + h * cell_w:.1f}" y="{y}" width="{cell_w - 2:.1f}" '
                       f'height="{cell_h - 2}" rx="3" fill="{PALETTE[0]}" '
                       f'fill-opacity="{alpha:.2f}"><title>{_e(name)} {h:02d}:00–{h:02d}:59: '
                       f'{v}</title></rect>')
    return _svg(width, top + len(rows) * cell_h + 4, "".join(out), label)


def donut(part: int, whole: int, caption: str, label: str) -> Markup:
    """A ring showing ``part`` of ``whole``, the percentage in the middle."""
    share = part / whole if whole else 0.0
    r, c = 70.0, 2 * 3.14159265 * 70.0
    dash = c * share
    body = (f'<circle cx="100" cy="100" r="{r}" fill="none" stroke="{GRID}" stroke-width="26"/>'
            f'<circle cx="100" cy="100" r="{r}" fill="none" stroke="{PALETTE[2]}" '
            f'stroke-width="26" stroke-dasharray="{dash:.1f} {c:.1f}" '
            f'transform="rotate(-90 100 100)"><title>{part} / {whole}</title></circle>'
            f'<text x="100" y="104" font-size="30" font-weight="700" text-anchor="middle" '
            f'fill="{INK}">{share * 100:.0f}%</text>'
            f'<text x="100" y="128" font-size="12" text-anchor="middle" '
            f'fill="{MUTED}">{_e(caption)}</text>')
    return _svg(200, 200, body, label)


@dataclass(frozen=True)
class Site:
    """A node on the schematic."""

    id: str
    kind: str
    severity: int  # 0 fine, 1 behind, 2 faults, 3 offline
    url: str
    note: str


SEVERITY_COLORS = ("#2d7a46", "#c98a1b", "#d9600b", "#b3261e")
# Up to this many sites the schematic is one ring (two rings look empty).
SINGLE_RING = 10


def schematic(sites: Sequence[Site], label: str) -> Markup:
    """The network as a star: the cloud in the middle, branches inside, machines around."""
    import math

    width, height = 560, 420
    cx, cy = width // 2, height // 2
    branches = [x for x in sites if x.kind == "branch"]
    machines = [x for x in sites if x.kind != "branch"]
    out = []
    placed: list[tuple[Site, float, float]] = []
    # A small network is one ring; a city's is branches inside, machines outside.
    rings = ([(list(sites), 150.0)] if len(sites) <= SINGLE_RING
             else [(branches, 100.0), (machines, 180.0)])
    for ring, radius in rings:
        for i, site in enumerate(ring):
            a = 2 * math.pi * i / max(1, len(ring)) - math.pi / 2 + (0.3 if radius > 150 else 0)
            placed.append((site, cx + radius * math.cos(a), cy + radius * math.sin(a)))
    for site, x, y in placed:
        dash = ' stroke-dasharray="5 5"' if site.severity >= 3 else ""
        out.append(f'<line x1="{cx}" y1="{cy}" x2="{x:.1f}" y2="{y:.1f}" stroke="{GRID}" '
                   f'stroke-width="2"{dash}/>')
    out.append(f'<circle cx="{cx}" cy="{cy}" r="26" fill="{INK}"/><text x="{cx}" y="{cy + 4}" '
               'font-size="11" text-anchor="middle" fill="#fff">cloud</text>')
    for site, x, y in placed:
        color = SEVERITY_COLORS[min(3, site.severity)]
        shape = (f'<rect x="{x - 11:.1f}" y="{y - 11:.1f}" width="22" height="22" rx="4" '
                 f'fill="{color}"/>' if site.kind == "branch" else
                 f'<circle cx="{x:.1f}" cy="{y:.1f}" r="11" fill="{color}"/>')
        anchor = "start" if x >= cx else "end"
        tx = x + 15 if x >= cx else x - 15
        out.append(f'<a href="{_e(site.url)}"><title>{_e(site.id)}: {_e(site.note)}</title>'
                   f'{shape}<text x="{tx:.1f}" y="{y + 4:.1f}" font-size="11.5" '
                   f'text-anchor="{anchor}" fill="{INK}">{_e(site.id)}</text></a>')
    return _svg(width, height, "".join(out), label)
