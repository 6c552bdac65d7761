#!/usr/bin/python3
"""Render signoff's Grafana dashboard to a PNG without Grafana.

Runs every panel's query of the dashboard JSON against a real Prometheus (its
HTTP API, query_range for time series, query for stats) and draws the panels at
their grid positions: the dashboard's queries, legends, units, thresholds and
layout, drawn with matplotlib (Debian's python3-matplotlib).

  render.py --dashboard charts/signoff/files/dashboards/signoff.json \\
            --prometheus http://127.0.0.1:9090 --start UNIX --end UNIX --out docs/img/dashboard.png
"""

import argparse
import json
import math
import re
import sys
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a", "#c4162a", "#96d98d"]
COLORS = {"green": "#73bf69", "red": "#f2495c", "yellow": "#f2cc0c"}
RATE_INTERVAL = "30s"


def query(base, path, params):
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        body = json.load(response)
    if body.get("status") != "success":
        sys.exit(f"render.py: Prometheus refused {params.get('query')!r}: {body}")
    return body["data"]["result"]


def expand(expr):
    return expr.replace("$__rate_interval", RATE_INTERVAL).replace('job=~"$job"', 'job=~".*"')


def legend(fmt, labels):
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("__name__", "job", "instance")) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def human(value, unit):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "No data"
    if unit == "s":
        for limit, div, suffix in [(60, 1, " s"), (3600, 60, " min"), (86400, 3600, " h"), (float("inf"), 86400, " days")]:
            if abs(value) < limit:
                v = value / div
                return f"{v:.3g}{suffix}" if abs(v) >= 0.01 or v == 0 else f"{value * 1000:.3g} ms"
    if unit == "bytes":
        return f"{value / 1048576:.1f} MiB"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "reqps":
        return f"{value:.3g}/s"
    return f"{value:.4g}"


def threshold_color(value, thresholds):
    color = "green"
    for step in (thresholds or {}).get("steps", []):
        if step.get("value") is None or (value is not None and value >= step["value"]):
            color = step["color"]
    return COLORS.get(color, color)


def draw_stat(ax, panel, base, end):
    target = panel["targets"][0]
    result = query(base, "query", {"query": expand(target["expr"]), "time": end})
    value = float(result[0]["value"][1]) if result else None
    defaults = panel["fieldConfig"]["defaults"]
    ax.text(0.5, 0.42, human(value, defaults.get("unit", "short")), ha="center", va="center", fontsize=20,
            fontweight="bold", color=threshold_color(value, defaults.get("thresholds")), transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_timeseries(ax, panel, base, start, end, step):
    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    n = 0
    for target in panel["targets"]:
        for series in query(base, "query_range", {"query": expand(target["expr"]), "start": start, "end": end, "step": step}):
            xs = [(float(t) - start) / 60 for t, _ in series["values"]]
            ys = [float(v) for _, v in series["values"]]
            ys = [y * 100 if unit == "percentunit" else y / 1048576 if unit == "bytes" else y for y in ys]
            ax.plot(xs, ys, color=PALETTE[n % len(PALETTE)], linewidth=1.4, label=legend(target.get("legendFormat"), series["metric"]))
            n += 1
    axis_unit = {"s": "seconds", "bytes": "MiB", "percentunit": "% of a core", "reqps": "per second"}.get(unit, "")
    if axis_unit:
        ax.set_ylabel(axis_unit, color=TEXT, fontsize=7)
    ax.set_xlabel("minutes into the run", color=TEXT, fontsize=7)
    ax.grid(color=GRID, linewidth=0.6)
    ax.tick_params(colors=TEXT, labelsize=7)
    if n:
        ax.legend(fontsize=6, loc="upper left", facecolor=PANEL, edgecolor=GRID, labelcolor=TEXT, ncol=2 if n > 4 else 1)
    else:
        ax.text(0.5, 0.5, "No data", ha="center", va="center", color=TEXT, transform=ax.transAxes)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dashboard", required=True)
    p.add_argument("--prometheus", required=True)
    p.add_argument("--start", type=float, required=True)
    p.add_argument("--end", type=float, required=True)
    p.add_argument("--step", type=float, default=2.0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    dashboard = json.load(open(a.dashboard))
    panels = dashboard["panels"]
    rows = max(pl["gridPos"]["y"] + pl["gridPos"]["h"] for pl in panels)
    unit_w, unit_h = 0.75, 0.36  # inches per grid column and row
    fig = plt.figure(figsize=(24 * unit_w, rows * unit_h + 0.6), facecolor=BACKGROUND)
    fig.suptitle(f"{dashboard['title']} — {dashboard['description']}", color=TEXT, fontsize=11, x=0.01, ha="left")
    top = (rows * unit_h) / (rows * unit_h + 0.6)
    for panel in panels:
        g = panel["gridPos"]
        pad_x, pad_y = 0.004, 0.05 / rows
        left, width = g["x"] / 24 + pad_x, g["w"] / 24 - 2 * pad_x
        height = g["h"] / rows * top - 2 * pad_y - 0.025
        bottom = top - (g["y"] + g["h"]) / rows * top + pad_y + (0.035 if panel["type"] == "timeseries" else 0)
        if panel["type"] == "timeseries":
            height -= 0.035
        ax = fig.add_axes([left + (0.03 if panel["type"] == "timeseries" else 0), bottom,
                           width - (0.035 if panel["type"] == "timeseries" else 0), height], facecolor=PANEL)
        for spine in ax.spines.values():
            spine.set_color(GRID)
        ax.set_title(panel["title"], color=TEXT, fontsize=9, loc="left")
        if panel["type"] == "stat":
            draw_stat(ax, panel, a.prometheus, a.end)
        else:
            draw_timeseries(ax, panel, a.prometheus, a.start, a.end, a.step)
    fig.savefig(a.out, dpi=80, facecolor=BACKGROUND)
    print(f"render.py: {len(panels)} panels from {a.prometheus} into {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
