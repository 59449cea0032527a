"""Benchmark reports: a printed table, a JSON result file and an SVG bar
chart (written by hand: no plotting library is needed on the machine)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from . import paths

BENCH_DIR = paths.BUILD / "bench"


def table(headers: list[str], rows: list[list], title: str = "") -> str:
    """A fixed-width text table; floats get 3 significant decimals."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [title] if title else []
    lines.append("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths))))
    lines.append("  ".join("-" * w for w in widths))
    for r in cells:
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


def write_json(name: str, data: dict) -> Path:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    out = BENCH_DIR / f"{name}.json"
    out.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return out


def bar_chart_svg(name: str, title: str, groups: list[str], series: dict[str, list[float]],
                  unit: str, log_scale: bool = False) -> Path:
    """Grouped horizontal bars: one group per entry of `groups`, one bar per
    series. Missing values are None and drawn as absent."""
    import math
    colors = ["#4472c4", "#ed7d31", "#70ad47", "#a5a5a5", "#ffc000"]
    bar_h, gap, left, width = 16, 14, 230, 460
    n = len(series)
    height = 60 + len(groups) * (n * bar_h + gap) + 20 * n
    values = [v for vs in series.values() for v in vs if v is not None and v > 0]
    vmax = max(values) if values else 1.0
    vmin = min(values) if values else 1.0

    def scale(v):
        if log_scale:
            lo = math.log10(vmin) - 0.3
            return width * (math.log10(v) - lo) / (math.log10(vmax) - lo + 1e-9)
        return width * v / vmax

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 120}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="20" font-size="15" font-weight="bold">{html.escape(title)}</text>',
           f'<text x="10" y="38" fill="#555">{html.escape(unit)}{" (log scale)" if log_scale else ""}</text>']
    y = 50
    for gi, group in enumerate(groups):
        out.append(f'<text x="10" y="{y + n * bar_h / 2 + 4}">{html.escape(group)}</text>')
        for si, (sname, vs) in enumerate(series.items()):
            v = vs[gi]
            if v is not None and v > 0:
                w = max(scale(v), 1)
                out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" fill="{colors[si % 5]}"/>')
                out.append(f'<text x="{left + w + 4:.1f}" y="{y + bar_h - 5}">{v:.4g}</text>')
            y += bar_h
        y += gap
    for si, sname in enumerate(series):
        out.append(f'<rect x="10" y="{y + si * 20}" width="12" height="12" fill="{colors[si % 5]}"/>')
        out.append(f'<text x="28" y="{y + si * 20 + 11}">{html.escape(sname)}</text>')
    out.append("</svg>")
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"{name}.svg"
    path.write_text("\n".join(out) + "\n")
    return path
