"""Charts of bench/results.json for docs/performance.md (needs matplotlib).

Usage: .venv/bin/python bench/plots.py [--results bench/results.json] [--out docs/performance]

Writes these PNGs into the output directory:

- `requests-per-second.png`: req/s (ws-echo: messages/s) per scenario, one bar per server;
- `cpu-per-request.png`: server CPU µs per request (ws-echo: per message), lower is better;
- `latency-hello.png`: wrk's p50/p75/p90/p99 of the `hello` scenario per server;
- `latency.png`: per scenario, the latency figures its load generator gives (wrk: p50-p99;
  oha, niquests, ws_load.py: p50, p99, p99.9 at a paced load; h2load: mean, max), log scale;
- `startup.png` (when the results have the `startup` scenario): time to the first response,
  idle RSS and PSS per server.

bench/run.py calls `render()` through this script after writing RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

BENCH = Path(__file__).resolve().parent
SERVER_COLORS = {
    "tricorn": "#d62728",
    "granian": "#1f77b4",
    "uvicorn": "#2ca02c",
    "hypercorn": "#9467bd",
    "pure-hyper": "#7f7f7f",  # hyper without Python: the limit, not a competitor
}
PERCENTILES = {"p50": "p50", "p75": "p75", "p90": "p90", "p99": "p99", "p999": "p99.9"}
DPI = 100
PNG_METADATA = {"Software": None}  # no matplotlib version in the file: re-renders differ only if the chart does

Run = dict[str, Any]


def load(path: Path) -> tuple[dict[str, Any], dict[str, list[Run]]]:
    """The meta block and the runs of results.json, grouped by scenario in the order they were
    listed, servers in the order of `meta.options.servers`."""
    data = json.loads(path.read_text())
    meta, runs = data["meta"], data["runs"]
    order = meta["options"]["scenarios"] + sorted({r["scenario"] for r in runs} - set(meta["options"]["scenarios"]))
    servers = meta["options"]["servers"]
    by_scenario: dict[str, list[Run]] = {}
    for name in order:
        rows = [r for r in runs if r["scenario"] == name]
        rows.sort(key=lambda r: servers.index(r["server"]) if r["server"] in servers else len(servers))
        if rows:
            by_scenario[name] = rows
    return meta, by_scenario


def color(server: str) -> str:
    return SERVER_COLORS.get(server, "#7f7f7f")


def short(value: float) -> str:
    """77690 -> '77.7k', 446 -> '446', 12.6 -> '12.6'."""
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"


def latency_figures(run: Run) -> list[tuple[str, float]]:
    """(label, ms) pairs the run has: percentiles where the load generator gives them (wrk:
    p50-p99, others p50 and p99), else h2load's mean and max."""
    figures = [(label, run[f"{p}_ms"]) for p, label in PERCENTILES.items() if run.get(f"{p}_ms") is not None]
    if figures:
        return figures
    return [(k, run[f"{k}_ms"]) for k in ("mean", "max") if run.get(f"{k}_ms") is not None]


def panel_grid(count: int, most_columns: int = 5) -> tuple[plt.Figure, list[Axes]]:
    columns = max(1, min(count, most_columns))
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.7 * columns, 2.35 * rows + 0.6), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def bar_panel(ax: Axes, title: str, runs: list[Run], key: str, unit: str) -> None:
    """One bar per server of `run[key]`, labelled with its value; failed runs say so."""
    names = [r["server"] for r in runs]
    values = [r[key] if r.get("ok") and r.get(key) is not None else 0.0 for r in runs]
    bars = ax.bar(names, values, color=[color(n) for n in names], width=0.65)
    top = max(values) or 1.0
    for bar, run, value in zip(bars, runs, values, strict=True):
        label = short(value) if run.get("ok") else "failed"
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, value), xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize=7.5)  # fmt: skip
    ax.set_ylim(0, top * 1.22)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(unit, fontsize=7.5)
    ax.tick_params(labelsize=7.5)
    ax.spines[["top", "right"]].set_visible(False)


def figure_title(fig: plt.Figure, text: str, meta: dict[str, Any]) -> None:
    machine = meta.get("machine", {})
    where = f"{machine.get('cpus_online', '?')}-core {machine.get('hypervisor', '')} machine".replace("  ", " ")
    fig.suptitle(
        f"{text}\none worker, server pinned to one core, load generator to the other; {where}; "
        f"bench/results.json of {meta['date'][:10]}",
        fontsize=9.5,
    )


def save(fig: plt.Figure, path: Path, top: float = 1.0) -> Path:
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(path, dpi=DPI, metadata=PNG_METADATA, pil_kwargs={"optimize": True})
    plt.close(fig)
    return path


def having(scenarios: dict[str, list[Run]], key: str, paced: bool = True) -> dict[str, list[Run]]:
    """The scenarios with `key` in a run; `paced=False` leaves out those at a fixed offered load
    (hello-p99), whose req/s is the load generator's rate, not the server's."""
    return {
        name: runs
        for name, runs in scenarios.items()
        if any(r.get(key) is not None for r in runs) and (paced or not any("offered_rps" in r for r in runs))
    }


def throughput_chart(meta: dict[str, Any], scenarios: dict[str, list[Run]], out: Path) -> Path | None:
    scenarios = having(scenarios, "rps", paced=False)
    if not scenarios:
        return None
    fig, axes = panel_grid(len(scenarios))
    for ax, (name, runs) in zip(axes, scenarios.items(), strict=True):
        unit = "messages/s" if name.startswith("ws-") else "requests/s"
        bar_panel(ax, name, runs, "rps", unit)
    figure_title(fig, "Throughput (higher is better)", meta)
    return save(fig, out / "requests-per-second.png")


def cpu_chart(meta: dict[str, Any], scenarios: dict[str, list[Run]], out: Path) -> Path | None:
    scenarios = having(scenarios, "cpu_us_per_req")
    if not scenarios:
        return None
    fig, axes = panel_grid(len(scenarios))
    for ax, (name, runs) in zip(axes, scenarios.items(), strict=True):
        unit = "CPU µs / message" if name.startswith("ws-") else "CPU µs / request"
        bar_panel(ax, name, runs, "cpu_us_per_req", unit)
    figure_title(fig, "Server CPU time per request (lower is better)", meta)
    return save(fig, out / "cpu-per-request.png")


def grouped_latency(ax: Axes, runs: list[Run], log_scale: bool) -> None:
    """Groups of latency figures (p50, p75, ...), one bar per server in each group."""
    ok = [r for r in runs if r.get("ok") and latency_figures(r)]
    if not ok:
        ax.text(0.5, 0.5, "no latency figures", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        return
    labels = [label for label, _ in latency_figures(ok[0])]
    width = 0.8 / max(len(ok), 1)
    for i, run in enumerate(ok):
        values = dict(latency_figures(run))
        xs = [j + (i - (len(ok) - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, [values.get(label, 0.0) for label in labels], width, color=color(run["server"]),
               label=run["server"])  # fmt: skip
    ax.set_xticks(range(len(labels)), labels)
    if log_scale:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(labelsize=7.5)
    ax.spines[["top", "right"]].set_visible(False)


def hello_latency_chart(meta: dict[str, Any], scenarios: dict[str, list[Run]], out: Path) -> Path | None:
    runs = scenarios.get("hello", [])
    if not any(r.get("ok") for r in runs):
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    grouped_latency(ax, runs, log_scale=False)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.2f", fontsize=7, padding=1)
    ax.set_ylabel("latency, ms", fontsize=8.5)
    ax.legend(fontsize=8, frameon=False)
    connections = meta["options"].get("connections", 64)
    ax.set_title(
        f"hello world, HTTP/1.1, wrk -c{connections} --latency: percentiles (lower is better)\n"
        f"each server at its own maximum throughput, so a faster server also queues less",
        fontsize=9,
    )
    return save(fig, out / "latency-hello.png")


def latency_chart(meta: dict[str, Any], scenarios: dict[str, list[Run]], out: Path) -> Path | None:
    scenarios = {name: runs for name, runs in scenarios.items() if any(latency_figures(r) for r in runs)}
    if not scenarios:
        return None
    fig, axes = panel_grid(len(scenarios))
    for ax, (name, runs) in zip(axes, scenarios.items(), strict=True):
        grouped_latency(ax, runs, log_scale=True)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("ms (log scale)", fontsize=7.5)
    handles = {
        server: plt.Rectangle((0, 0), 1, 1, color=c)
        for server, c in SERVER_COLORS.items()
        if any(r["server"] == server for runs in scenarios.values() for r in runs)
    }
    fig.legend(handles.values(), handles.keys(), loc="upper right", fontsize=8, frameon=False, ncol=len(handles))
    paced = [name for name, runs in scenarios.items() if any("offered_rps" in r for r in runs)]
    at = f"at full load ({', '.join(paced)}: at a fixed rate)" if paced else "at full load"
    figure_title(fig, f"Latency {at}, lower is better; h2load gives mean and max only", meta)
    return save(fig, out / "latency.png", top=0.96)


def startup_chart(meta: dict[str, Any], scenarios: dict[str, list[Run]], out: Path) -> Path | None:
    """The startup scenario: time to the first response and idle memory per server."""
    runs = scenarios.get("startup", [])
    if not any(r.get("ok") for r in runs):
        return None
    runs = [
        dict(
            r,
            first_response_ms=r["first_response_s"] * 1e3,
            rss_idle_mib=r["rss_idle_kb"] / 1024,
            pss_idle_mib=r["pss_idle_kb"] / 1024,
        )
        if r.get("ok")
        else r
        for r in runs
    ]
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.2), squeeze=False)
    panels = (("time to the first response", "first_response_ms", "ms"),
              ("idle RSS", "rss_idle_mib", "MiB"), ("idle PSS", "pss_idle_mib", "MiB"))  # fmt: skip
    for ax, (title, key, unit) in zip(axes[0], panels, strict=True):
        bar_panel(ax, title, runs, key, unit)
    figure_title(fig, "Startup, one worker (lower is better)", meta)
    return save(fig, out / "startup.png")


def render(results_json_path: Path | str, out_dir: Path | str) -> list[Path]:
    """Render every chart of `results_json_path` into `out_dir` (created if missing); returns the files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta, scenarios = load(Path(results_json_path))
    written = [
        throughput_chart(meta, scenarios, out),
        cpu_chart(meta, scenarios, out),
        hello_latency_chart(meta, scenarios, out),
        latency_chart(meta, scenarios, out),
        startup_chart(meta, scenarios, out),
    ]
    return [path for path in written if path is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=BENCH / "results.json")
    parser.add_argument("--out", type=Path, default=BENCH.parent / "docs" / "performance")
    args = parser.parse_args()
    for path in render(args.results, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
