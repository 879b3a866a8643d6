"""Turn raw run records into medians, ratios and the Markdown report."""

from __future__ import annotations

import statistics
from typing import Any

from _scenarios import CLIENT_BY_NAME, SCENARIO_BY_NAME, Scenario

Record = dict[str, Any]


def rate(sc: Scenario, rec: Record) -> float:
    """req/s for tiny bodies, MB/s (10^6 bytes) for transfers."""
    if rec["elapsed"] <= 0:
        return 0.0
    elapsed = float(rec["elapsed"])
    if sc.unit == "req/s":
        return float(rec["ops"]) / elapsed
    return float(rec["bytes"]) / elapsed / 1e6


def summarize(records: list[Record]) -> dict[str, list[dict[str, Any]]]:
    """Per scenario, one row per (client, loop): medians over the ok repeats."""
    out: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        out.setdefault(rec["scenario"], [])
    for name, rows in out.items():
        sc = SCENARIO_BY_NAME[name]
        keys: list[tuple[str, str]] = []
        for rec in records:
            key = (rec["client"], rec["loop"])
            if rec["scenario"] == name and key not in keys:
                keys.append(key)
        for client, loop in keys:
            runs = [r for r in records
                    if r["scenario"] == name and r["client"] == client and r["loop"] == loop]
            ok = [r for r in runs if r.get("ok")]
            row: dict[str, Any] = {"client": client, "loop": loop, "runs": len(runs),
                                   "ok": len(ok), "role": CLIENT_BY_NAME[client].role}
            if ok:
                row["rate"] = statistics.median(rate(sc, r) for r in ok)
                row["rates"] = [round(rate(sc, r), 2) for r in ok]
                # (max - min) / median: how far to trust this row's ratios
                row["spread"] = (max(row["rates"]) - min(row["rates"])) / row["rate"] \
                    if row["rate"] else 0.0
                row["cpu_per_op"] = statistics.median(r["cpu"] / max(r["ops"], 1) for r in ok)
                row["cpu_pct"] = statistics.median(100 * r["cpu"] / r["elapsed"] for r in ok)
                row["rss_mib"] = statistics.median(r["maxrss_kb"] / 1024 for r in ok)
                conns = [r["server_conns"] for r in ok if r.get("server_conns") is not None]
                row["conns"] = statistics.median(conns) if conns else None
                row["cpu_whole_run"] = bool(ok[0].get("cpu_whole_run"))
                peaks = [r["peak_open_conns"] for r in ok if r.get("peak_open_conns") is not None]
                # The largest over the repeats: a cap has to hold in every run.
                row["peak_conns"] = max(peaks) if peaks else None
                firsts = [r["first_s"] for r in ok if r.get("first_s") is not None]
                laters = [r["later_s"] for r in ok if r.get("later_s") is not None]
                if firsts:
                    row["first_s"] = statistics.median(firsts)
                if laters:
                    row["later_s"] = statistics.median(laters)
            else:
                row["error"] = runs[-1].get("error", "failed") if runs else "not run"
            rows.append(row)
        _ratios(rows)
    return out


def _ratios(rows: list[dict[str, Any]]) -> None:
    """x best peer, x raw, x raw-protocol and x raw-pull, each against rows on
    the same loop."""
    for row in rows:
        loop = row["loop"]
        peers = [r for r in rows if r["role"] == "peer" and r["loop"] == loop and "rate" in r]
        if "rate" not in row or row["role"] == "ceiling":
            continue
        if peers:
            best = max(peers, key=lambda r: r["rate"])
            row["best_peer"] = best["client"]
            row["x_best_peer"] = row["rate"] / best["rate"] if best["rate"] else None
        for role, key in (("raw", "x_raw"), ("raw-protocol", "x_raw_protocol"),
                          ("raw-pull", "x_raw_pull")):
            base = _role_row(rows, role, loop)
            if base is not None and base["rate"]:
                row[key] = row["rate"] / base["rate"]


def _role_row(rows: list[dict[str, Any]], role: str, loop: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["role"] == role and r["loop"] == loop and "rate" in r),
                None)


def _fmt_cpu(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _x(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def scenario_table(sc: Scenario, rows: list[dict[str, Any]]) -> str:
    fleet = sc.kind == "fleet"  # one more column: most connections open at once
    head = (f"| client | loop | {sc.unit} | x best peer | x raw | CPU/req | CPU % "
            "| peak RSS MiB | server conns " + ("| peak open conns " if fleet else "")
            + "| ok/runs | spread |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            + ("---:|" if fleet else "") + "\n")
    lines = []
    for r in rows:
        name = f"**{r['client']}**" if r["role"] == "ours" else r["client"]
        if r["role"] == "ceiling":
            name += " (ceiling)"
        if "rate" not in r:
            err = str(r.get("error", "")).replace("|", "/").replace("\n", " ")[:140]
            extra = "| " if fleet else ""
            lines.append(f"| {name} | {r['loop']} | error | | | | | | | {extra}"
                         f"{r['ok']}/{r['runs']} | |\n| | | `{err}` | | | | | | | {extra}| |")
            continue
        cpu = _fmt_cpu(r["cpu_per_op"]) + ("¹" if r["cpu_whole_run"] else "")
        conns = "—" if r.get("conns") is None else f"{r['conns']:.0f}"
        if fleet:
            conns += " | " + ("—" if r.get("peak_conns") is None else str(r["peak_conns"]))
        lines.append(
            f"| {name} | {r['loop']} | {_fmt_rate(r['rate'])} | {_x(r.get('x_best_peer'))} "
            f"| {_x(r.get('x_raw'))} | {cpu} | {r['cpu_pct']:.0f} | {r['rss_mib']:.0f} "
            f"| {conns} | {r['ok']}/{r['runs']} | {100 * r['spread']:.0f}% |"
        )
    return head + "\n".join(lines) + "\n" + _per_download(rows)


def _per_download(rows: list[dict[str, Any]]) -> str:
    """For downloads: mean time per download, each slot's first apart from
    the rest (over HTTP/1.1 the first is its connection's first large body:
    TCP windows and receive buffers still small), so a cold-start cost
    shows apart from the steady rate. Medians over the repeats."""
    timed = [r for r in rows if "first_s" in r]
    if not timed:
        return ""
    out = ["", "Per download, mean over the run (median over the repeats): the first "
           "of each of the in-flight slots (over HTTP/1.1, its connection's first "
           "large body), the later ones, and each ÷ raw-protocol's on the same "
           "loop (above 1: slower).", "",
           "| client | loop | first ms | later ms | first ÷ raw-protocol "
           "| later ÷ raw-protocol |", "|---|---|---:|---:|---:|---:|"]
    for r in timed:
        base = next((b for b in timed if b["role"] == "raw-protocol"
                     and b["loop"] == r["loop"]), None)
        later = r.get("later_s")

        def vs(key: str, value: float | None, base: dict[str, Any] | None = base) -> str:
            ref = base.get(key) if base is not None else None
            return _x(value / ref) if value is not None and ref else "—"

        name = f"**{r['client']}**" if r["role"] == "ours" else r["client"]
        out.append(f"| {name} | {r['loop']} | {r['first_s'] * 1e3:.1f} "
                   f"| {'—' if later is None else f'{later * 1e3:.1f}'} "
                   f"| {vs('first_s', r['first_s'])} | {vs('later_s', later)} |")
    return "\n".join(out) + "\n"


def headline(summary: dict[str, list[dict[str, Any]]]) -> str:
    """One line per scenario and loop: ours against the best peer and raw."""
    out = ["| scenario | loop | hyperhttp | best peer | hyperhttp ÷ best peer "
           "| hyperhttp ÷ raw | hyperhttp ÷ raw-protocol | hyperhttp ÷ raw-pull "
           "| raw ÷ ceiling | CPU/req ÷ leanest peer's |",
           "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for name, rows in summary.items():
        sc = SCENARIO_BY_NAME[name]
        ceiling = next((r for r in rows if r["role"] == "ceiling" and "rate" in r), None)
        for loop in ("asyncio", "uvloop"):
            ours = next((r for r in rows if r["role"] == "ours" and r["loop"] == loop), None)
            raw = _role_row(rows, "raw", loop)
            peers = [r for r in rows if r["role"] == "peer" and r["loop"] == loop and "rate" in r]
            if ours is None:
                continue
            best = max(peers, key=lambda r: r["rate"]) if peers else None
            ours_s = f"{_fmt_rate(ours['rate'])} {sc.unit}" if "rate" in ours else "error"
            best_s = f"{best['client']} {_fmt_rate(best['rate'])}" if best else "—"
            raw_ceiling = (raw["rate"] / ceiling["rate"]) if raw and ceiling else None
            # CPU per request barely depends on how much CPU the run was given,
            # so it is the steadier comparison on a shared machine.
            lean = min((r["cpu_per_op"] for r in peers), default=None)
            cpu_x = ours["cpu_per_op"] / lean if lean and "rate" in ours else None
            out.append(f"| {name} | {loop} | {ours_s} | {best_s} | {_x(ours.get('x_best_peer'))} "
                       f"| {_x(ours.get('x_raw'))} | {_x(ours.get('x_raw_protocol'))} "
                       f"| {_x(ours.get('x_raw_pull'))} | {_x(raw_ceiling)} | {_x(cpu_x)} |")
    return "\n".join(out) + "\n"


def markdown(meta: dict[str, Any], summary: dict[str, list[dict[str, Any]]]) -> str:
    parts = [f"# Benchmark results\n\nLatest run: {meta['date']} (`{meta['command']}`, "
             f"{meta['mode']} mode: {meta['repeats']} interleaved repeats, medians; "
             f"{meta['duration']} s per tiny-body run after {meta['warmup']} s warm-up; "
             f"upload of {meta['upload_mib']} MiB).\n",
             "These machines are noisy and shared: quote the ratios, not the absolute "
             "numbers.\n"]
    if "raw_window" in meta:  # runs before these settings existed did not record them
        window = meta["raw_window"]
        parts.append("HTTP/1.1 raw clients: receive windows started at "
                     + (f"{window:,} bytes" if window else "the kernel's default")
                     + f", raw and raw-pull read into {meta['raw_buffer']:,}-byte buffers "
                     "(`--raw-window`, `--raw-buffer`; the defaults are the settings "
                     "hyperhttp uses, see bench/_raw.py).\n")
    parts.append("## Machine\n")
    for key, value in meta["machine"].items():
        parts.append(f"- {key}: {value}")
    parts.append("\n## Versions\n")
    for key, value in meta["versions"].items():
        parts.append(f"- {key}: {value}")
    parts.append("\n## Headline ratios\n")
    parts.append(headline(summary))
    notes = [*meta.get("notes", []),
             "raw ÷ ceiling above 1 (downloads, upload) means the native tool, "
             "single-threaded h2load, is not a ceiling for large transfers here; "
             "for tiny bodies wrk/h2load are the server's limit.",
             "Other sessions share this 2-core machine: check the spread column "
             "before reading a ratio, and rerun a scenario with more --repeats to "
             "settle one. CPU/req ÷ leanest peer's (lower is better) depends little "
             "on contention and is the steadier number when spreads are wide."]
    for note in notes:
        parts.append(f"- {note}")
    parts.append("\n## Tables\n")
    parts.append("Rates are medians over the repeats. x best peer: this row ÷ the fastest "
                 "of aiohttp, httpx, niquests, hyperhttp-2.1.0 on the same loop. x raw: this "
                 "row ÷ the raw client on the same loop and protocol (HTTP/2: over the "
                 "same TLS, with no h2 library): a "
                 "BufferedProtocol reading into one reused buffer, so it never copies "
                 "or allocates per read. raw-protocol is the same client on a plain "
                 "asyncio.Protocol (a new bytes object per read, as aiohttp gets). Both "
                 "count a body inside the loop's read callback; raw-pull (HTTP/1.1) is raw "
                 "with a task that pulls the body, as every client's caller does: each read "
                 "wakes it and it takes all that is buffered, in bytes of at most 64 KiB. "
                 "The headline gives ours ÷ each. "
                 "CPU/req: client process CPU (user+system) in the measured window ÷ "
                 "requests; ¹ = whole run of a native tool, warm-up included. Server conns: "
                 "connections nginx (or the upload sink) accepted during the run, warm-up "
                 "included. Spread: (max - min) / median over the repeats; a ratio between "
                 "rows is only meaningful beyond it.\n")
    if any(SCENARIO_BY_NAME[name].kind == "fleet" for name in summary):
        parts.append("Fleet rows: 4 worker processes started together; req/s and CPU are "
                     "summed over the workers (and the coordinator in fleet-4w-coord), "
                     "peak RSS is the largest worker's. Peak open conns: the most "
                     "connections nginx had open at once (stub_status sampled every 50 ms), "
                     "the largest over the repeats; fleet-4w-coord's cap is 32.\n")
    for name, rows in summary.items():
        sc = SCENARIO_BY_NAME[name]
        parts.append(f"### {name}: {sc.description}\n")
        parts.append(scenario_table(sc, rows))
    parts.append("## Reproduce\n")
    parts.append("```\npip install -e .            # our hyperhttp\n"
                 "python bench/run.py          # full run; installs nginx, wrk, h2load, "
                 "niquests and hyperhttp 2.1.0 when missing\n"
                 "python bench/run.py --quick  # ~2 minute smoke run\n```\n"
                 "See bench/README.md for options. Raw per-run JSON: bench/results/.\n")
    return "\n".join(parts)
