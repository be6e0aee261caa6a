"""The plot of docs/performance.md: latency percentiles of (b) against the offered load."""

from pathlib import Path

from bench.report import P99_TARGET_MS, Report


def plot_latency(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to the PNG
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    offered = [run.offered_rps or 0.0 for _, run in report.sweep]
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=120)
    for field, label in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
        values = [getattr(run, field) for _, run in report.sweep]
        axes.plot(offered, values, marker="o", label=label)
    maximum = report.runs["b"].rps
    axes.axhline(P99_TARGET_MS, linestyle="--", color="grey", label="p99 target (50 ms)")
    axes.axvline(maximum / 2, linestyle=":", color="black", label="50% of max throughput")
    axes.axvline(maximum, linestyle="-.", color="black", label="max throughput (closed loop)")
    axes.set_yscale("log")
    axes.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_minor_formatter(NullFormatter())
    axes.set_xlim(left=0)
    axes.set_xlabel("offered load, POST /v1/orders (requests/s, Poisson arrivals)")
    axes.set_ylabel("latency (ms, log scale)")
    axes.set_title(
        f"POST /v1/orders over {report.accounts} accounts: {report.workers} worker(s), "
        f"{report.machine.get('cores', '?')} cores shared with PostgreSQL and the load generator",
        fontsize=9,
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
