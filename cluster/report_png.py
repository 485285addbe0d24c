"""A run's report as one PNG (matplotlib, headless Agg backend): four panels on one page.

Timeline (a row per agent, a bar per attempt, a black tick at the first token), attempts in
flight, cost per agent, latency percentiles per tier. matplotlib is imported inside the
functions: the CLI starts without it.

Example:
    >>> write_png(load_report(journal, None), Path("run.png"))   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster.report_data import COLOURS, STATUSES, RunReport


def write_png(report: RunReport, path: Path) -> None:
    """Draw ``report`` and save it to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = min(sum(report.lanes.values()), 60)
    timeline_h = max(2.0, 0.12 * rows + 0.3 * len(report.agents))
    fig = plt.figure(figsize=(12, timeline_h + 5.5), dpi=100)
    grid = fig.add_gridspec(3, 2, height_ratios=[timeline_h, 1.6, 2.4])
    _timeline(fig.add_subplot(grid[0, :]), report)
    _in_flight(fig.add_subplot(grid[1, :]), report)
    _cost(fig.add_subplot(grid[2, 0]), report)
    _latency(fig.add_subplot(grid[2, 1]), report)
    totals = report.totals
    fig.suptitle(f"raytroupe run {report.run_id} ({report.topology}): "
                 f"{report.duration_s:.2f} s, ${totals.cost_usd:.6f}, "
                 f"{totals.calls} calls", fontsize=13)
    fig.tight_layout()
    try:
        fig.savefig(path)
    finally:
        plt.close(fig)


def _timeline(ax: Any, report: RunReport) -> None:
    """A row per agent, split in lanes so that overlapping attempts stay visible."""
    lanes = report.lanes
    base, y = {}, 0.0
    for agent, count in lanes.items():
        base[agent] = y
        y += count + 0.5
    minimum = max(report.duration_s, 1e-3) / 2000
    for status in STATUSES:  # one vectorised call per status: 20,000 attempts draw fast
        bars = [a for a in report.attempts if a.status == status]
        if bars:
            ax.barh([base[a.agent] + a.lane + 0.5 for a in bars],
                    [max(a.latency_s, minimum) for a in bars], height=0.8,
                    left=[a.start_s for a in bars], color=COLOURS[status], label=status)
    ttfts = [(a.start_s + a.ttft_s, base[a.agent] + a.lane + 0.5) for a in report.attempts
             if a.ttft_s is not None]
    if ttfts:
        ax.scatter([t for t, _ in ttfts], [r for _, r in ttfts], marker="|", color="black",
                   s=40, label="first token", zorder=3)
    ax.set_yticks([base[a] + lanes[a] / 2 for a in lanes], list(lanes))
    for agent in list(base)[1:]:
        ax.axhline(base[agent] - 0.25, color="#bdbdbd", linewidth=0.8)
    ax.set_ylim(y, 0)
    ax.set_xlim(0, max(report.duration_s, 1e-3) * 1.01)
    ax.set_xlabel("seconds since the first send")
    ax.set_title("Timeline: one bar per attempt, send to last byte", loc="left", fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.grid(axis="x", alpha=0.3)


def _in_flight(ax: Any, report: RunReport) -> None:
    times = [t for t, _ in report.in_flight] + [report.duration_s]
    levels = [n for _, n in report.in_flight] + [report.in_flight[-1][1]]
    ax.step(times, levels, where="post", color="#1565c0")
    ax.fill_between(times, levels, step="post", alpha=0.2, color="#1565c0")
    ax.set_xlim(0, max(report.duration_s, 1e-3) * 1.01)
    ax.set_ylim(0, max(report.peak_in_flight, 1) * 1.15)
    ax.set_title("Attempts in flight (limiter wait is not journaled; see the HTML note)",
                 loc="left", fontsize=11)
    ax.grid(alpha=0.3)


def _cost(ax: Any, report: RunReport) -> None:
    names = [r.key.rsplit("/", 1)[-1] for r in report.by_agent]
    costs = [float(r.cost_usd) for r in report.by_agent]
    ax.barh(names, costs, color="#2e7d32")
    ax.invert_yaxis()
    for i, row in enumerate(report.by_agent):
        tokens = row.input_tokens + row.cache_write_5m + row.cache_write_1h + row.cache_read
        ax.text(costs[i], i, f" {tokens + row.output_tokens:,} tok", va="center", fontsize=8)
    ax.set_xlabel("USD")
    ax.set_title("Cost per agent (tokens at the bar's end)", loc="left", fontsize=11)


def _latency(ax: Any, report: RunReport) -> None:
    tiers = report.latency
    width = 0.25
    for j, (name, colour) in enumerate((("p50", "#90caf9"), ("p95", "#1e88e5"),
                                        ("p99", "#0d47a1"))):
        values = [getattr(t, name) or 0.0 for t in tiers]
        ax.bar([i + (j - 1) * width for i in range(len(tiers))], values, width, label=name,
               color=colour)
    ax.set_xticks(range(len(tiers)), [f"{t.tier} ({t.attempts})" for t in tiers])
    ax.set_ylabel("seconds")
    ax.set_ylim(0, max((t.p99 or 0.0 for t in tiers), default=1.0) * 1.3 or 1.0)
    ax.set_title("Latency per tier (attempts)", loc="left", fontsize=11)
    ax.legend(fontsize=8, ncols=3, loc="upper center")  # above the bars: headroom kept
