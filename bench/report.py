"""Reporting: the results table, the ratios against the yardsticks, the plots."""

from __future__ import annotations

from typing import Any

from bench.levels import P99_LIMIT_MS, SERVERS, LevelResult

# --------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(results: list[LevelResult]) -> str:
    """The results as a Markdown table."""
    head = (
        "| server | N | caller→OpenAI p50/p95/p99/max ms | OpenAI→caller p50/p95/p99/max ms "
        "| lost/reordered up | lost/reordered down | barge-in p50/p99/max ms (n) "
        "| webhook p50/p99/max ms (answered) | first audio p50/p99/max ms "
        "| CPU s/call-min | server core busy | RSS/call KiB | gen lag p99/max ms "
        "| stand-in lag p99/max ms | load core busy | other procs on server/load core "
        "| records whole / with both parties | pass |"
    )
    lines = [head, "|" + "|".join([" --- "] * (head.count("|") - 1)) + "|"]
    for r in results:
        def q(d: dict[str, Any], keys: tuple[str, ...] = ("p50", "p95", "p99", "max")) -> str:
            return "/".join(_f(d.get(k)) for k in keys)

        server = r.server + (" +pre-connect" if r.preconnect else "")
        lines.append(
            f"| {server} | {r.n} | {q(r.up)} | {q(r.down)} "
            f"| {r.lost_up}/{r.reordered_up} | {r.lost_down}/{r.reordered_down} "
            f"| {q(r.barge_in, ('p50', 'p99', 'max'))} ({r.barge_in.get('n', 0)}) "
            f"| {q(r.webhook, ('p50', 'p99', 'max'))} ({r.webhooks_answered}) "
            f"| {q(r.ttfa, ('p50', 'p99', 'max'))} "
            f"| {_f(r.cpu_s_per_call_minute, 3)} | {_f(r.server_core_busy, 2)} "
            f"| {_f(r.rss_per_call_kb, 0)} | {q(r.generator_lag, ('p99', 'max'))} "
            f"| {q(r.standin_lag, ('p99', 'max'))} | {_f(r.load_core_busy, 2)} "
            f"| {_f(r.foreign_on_server_core, 2)}/{_f(r.foreign_on_load_core, 2)} "
            f"| {'-' if r.records_ok is None else f'{r.records_ok}/{r.conversations_ok}/{r.n}'} "
            f"| {'yes' if r.passed else 'no'} |"
        )
    return "\n".join(lines)


def preconnect_table(results: list[LevelResult]) -> str:
    """Time to first audio (webhook sent → the greeting's first audio at the caller) of each
    app level with the default agent's pre-connect off and on, and the sessions each opened
    (pre-connect must not open more: the streams adopt theirs) (Markdown)."""
    by = {(r.server, r.n, r.preconnect): r for r in results}
    head = ("| server | N | first audio p50/p99/max ms, pre-connect off | on "
            "| p50 on / off | sessions opened off / on (warm-up call included) |")
    lines = [head, "|" + "|".join([" --- "] * (head.count("|") - 1)) + "|"]
    for server, n in sorted({(r.server, r.n) for r in results}):
        off, on = by.get((server, n, False)), by.get((server, n, True))
        if on is None:
            continue

        def q(r: LevelResult | None) -> str:
            return "/".join(_f(r.ttfa.get(k), 0) for k in ("p50", "p99", "max")) if r else "-"

        p50_off = off.ttfa.get("p50") if off else None
        p50_on = on.ttfa.get("p50")
        ratio = f"{p50_on / p50_off:.2f}x" if p50_on is not None and p50_off else "-"
        sessions = f"{off.sessions_opened if off else '-'} / {on.sessions_opened}"
        lines.append(f"| {server} | {n} | {q(off)} | {q(on)} | {ratio} | {sessions} |")
    return "\n".join(lines)


def ratios(results: list[LevelResult], app: str = "uvicorn") -> str:
    """The app's figures against the two yardsticks of the same run, per N (Markdown)."""
    by = {(r.server, r.n): r for r in results if not r.preconnect}
    head = (f"| N | CPU s/call-min {app} | channels | reference | {app} / reference "
            f"| {app} / channels | webhook p99 ms {app} / channels | first audio p50 ms {app} "
            f"| RSS/call KiB {app} / channels / reference |")
    lines = [head, "|" + "|".join([" --- "] * (head.count("|") - 1)) + "|"]
    for n in sorted({r.n for r in results if r.server == app}):
        a, c, ref = by.get((app, n)), by.get(("channels", n)), by.get(("reference", n))

        def cpu(r: LevelResult | None) -> float | None:
            return r.cpu_s_per_call_minute if r is not None else None

        def ratio(x: float | None, y: float | None) -> str:
            return f"{x / y:.2f}x" if x is not None and y else "-"

        lines.append(
            f"| {n} | {_f(cpu(a), 3)} | {_f(cpu(c), 3)} | {_f(cpu(ref), 3)} "
            f"| {ratio(cpu(a), cpu(ref))} | {ratio(cpu(a), cpu(c))} "
            f"| {_f(a.webhook.get('p99') if a else None)} / "
            f"{_f(c.webhook.get('p99') if c else None)} "
            f"| {_f(a.ttfa.get('p50') if a else None, 0)} "
            f"| {_f(a.rss_per_call_kb if a else None, 0)} / "
            f"{_f(c.rss_per_call_kb if c else None, 0)} / "
            f"{_f(ref.rss_per_call_kb if ref else None, 0)} |"
        )
    return "\n".join(lines)


#: The plotted figures: (title, unit, value of a result, log scale, target line).
FIGURES: tuple[tuple[str, str, Any, bool, float | None], ...] = (
    ("p99 caller→OpenAI", "ms", lambda r: r.up.get("p99"), True, P99_LIMIT_MS),
    ("p99 OpenAI→caller", "ms", lambda r: r.down.get("p99"), True, None),
    ("CPU per call-minute (one core)", "CPU s", lambda r: r.cpu_s_per_call_minute, False, None),
    ("webhook p99 (calls entering within 2 s)", "ms", lambda r: r.webhook.get("p99"), True,
     None),
    ("time to first audio p50", "ms", lambda r: r.ttfa.get("p50"), True, None),
    ("RSS per call", "KiB", lambda r: r.rss_per_call_kb, False, 512.0),
)


def plot(results: list[LevelResult], path: str) -> None:
    """One plot per figure against N, one line per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (title, unit, value, log, target) in zip(axes.flat, FIGURES, strict=True):
        for server in SERVERS:
            for pre in (False, True):
                rows = sorted((r for r in results if r.server == server and r.preconnect == pre),
                              key=lambda r: r.n)
                points = [(r.n, value(r)) for r in rows if value(r) is not None]
                if points:
                    ax.plot(*zip(*points, strict=True), marker="o",
                            label=server + (" +pre-connect" if pre else ""))
        if target is not None:
            ax.axhline(target, color="grey", linestyle="--", linewidth=1)
        ax.set(title=title, xlabel="concurrent calls", ylabel=unit)
        if log:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
