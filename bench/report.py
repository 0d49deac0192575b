"""
What a run prints and saves: a table per scenario and interpreter, the targets of issue 13 with
PASS or FAIL, and the JSON file (bench/results/latest.json) that holds every figure.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from bench.scenarios import INTERPRETER_LABELS

#: Issue 13's targets: (scenario, twistgate's interpreter or None for each, reference, ratio).
TARGETS = (
    ("plain", "pypy", "fastify", 1.5),
    ("plain", "pypy", "aiohttp", 3.0),
    ("plain", "pypy", "express-plain", 5.0),
    ("plain", "cpython", "aiohttp", 1.0),
    ("plain", "cpython", "express-plain", 2.5),
    ("jwt", None, "express-full", 4.0),
    ("cache", None, "express-cache", 1.5),
)


def machine() -> dict:
    """The machine the figures were taken on."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_kb = None
    try:
        with open("/proc/meminfo") as f:
            memory_kb = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(memory_kb / 1024.0 / 1024.0, 1) if memory_kb else None,
        "kernel": platform.release(),
    }


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# ------------------------------------------------------------------------------------------
# Tables


def _fmt(value, pattern: str = "%.2f", none: str = "-") -> str:
    return none if value is None else pattern % value


def _rps(value) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    lines = []
    for number, row in enumerate([header] + rows):
        cells = [str(cell).ljust(widths[0]) if i == 0 else str(cell).rjust(widths[i])
                 for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def median(scenario: dict, key: str) -> dict | None:
    gateway = scenario["gateways"].get(key)
    return gateway.get("median") if gateway else None


def ratio(scenario: dict, interpreter: str, reference: str) -> float | None:
    """twistgate's req/s on C{interpreter} over C{reference}'s, in C{scenario}."""
    mine = median(scenario, "twistgate-" + interpreter)
    theirs = median(scenario, reference)
    if not mine or not theirs or not theirs["requests_per_sec"]:
        return None
    return mine["requests_per_sec"] / theirs["requests_per_sec"]


def _notes(gateway: dict) -> str:
    notes = []
    m = gateway.get("median") or {}
    if m.get("non_2xx"):
        notes.append("%d non-2xx" % m["non_2xx"])
    if m.get("socket_errors"):
        notes.append("%d socket errors" % m["socket_errors"])
    if gateway.get("error"):
        notes.append("ERROR: " + gateway["error"].splitlines()[0][:80])
    return "; ".join(notes)


def scenario_tables(scenario: dict) -> str:
    """The tables of one scenario: one per twistgate interpreter measured (or skipped)."""
    out = []
    interpreters = [
        key.split("-", 1)[1]
        for key in list(scenario["gateways"]) + list(scenario["skipped"])
        if key.startswith("twistgate-")
    ]
    latency = any(g["kind"] == "direct" for g in scenario["gateways"].values())
    direct = median(scenario, "direct")
    for interpreter in dict.fromkeys(interpreters):
        key = "twistgate-" + interpreter
        title = "%s - twistgate on %s (wrk -t%d -c%d)" % (
            scenario["title"], INTERPRETER_LABELS[interpreter], scenario["threads"],
            scenario["connections"])
        out.append(title)
        out.append("=" * len(title))
        background = scenario.get("background")
        if background:
            out.append("background before the scenario: %s%% of all cores busy%s" % (
                background["busy_percent_of_all_cores"],
                "".join(" | %(name)s %(cpu_percent)d%%" % p
                        for p in background["busy_processes"])))
        if key in scenario["skipped"]:
            out.append(scenario["skipped"][key])
            out.append("")
            continue
        rows = []
        for other_key, gateway in scenario["gateways"].items():
            if other_key.startswith("twistgate-") and other_key != key:
                continue
            m = gateway.get("median") or {}
            row = [gateway["label"], _rps(m.get("requests_per_sec")),
                   _fmt(m.get("p50_ms")), _fmt(m.get("p99_ms"))]
            if latency:
                is_direct = gateway["kind"] == "direct"
                row += [
                    "-" if is_direct or not direct or not m else
                    _fmt(m["p50_ms"] - direct["p50_ms"], "%+.2f"),
                    "-" if is_direct or not direct or not m else
                    _fmt(m["p99_ms"] - direct["p99_ms"], "%+.2f"),
                ]
            row += [_fmt(m.get("rss_mb"), "%.1f"), _fmt(m.get("cpu_percent"), "%.0f%%")]
            if gateway["kind"] == "reference":
                row.append(_fmt(ratio(scenario, interpreter, other_key), "%.2fx"))
            else:
                row.append("")
            row.append(_notes(gateway))
            rows.append(row)
        header = ["gateway", "req/s", "p50 ms", "p99 ms"]
        if latency:
            header += ["+p50 ms", "+p99 ms"]
        header += ["RSS MB", "CPU", "twistgate/this", "notes"]
        out.append(_table(header, rows))
        out.append("")
    return "\n".join(out)


def targets(results: dict) -> list[dict]:
    """Each target of issue 13 with the ratio measured in this run, and PASS/FAIL."""
    scenarios = results["scenarios"]
    checked = []
    for name, interpreter, reference, wanted in TARGETS:
        interpreters = [interpreter] if interpreter else list(INTERPRETER_LABELS)
        for each in interpreters:
            entry = {"scenario": name, "interpreter": each, "reference": reference,
                     "target": wanted, "ratio": None, "verdict": "not measured"}
            scenario = scenarios.get(name)
            if scenario is not None:
                skipped = scenario["skipped"].get("twistgate-" + each)
                value = ratio(scenario, each, reference)
                if skipped:
                    entry["verdict"] = skipped
                elif value is not None:
                    entry["ratio"] = round(value, 3)
                    entry["verdict"] = "PASS" if value >= wanted else "FAIL"
            checked.append(entry)
    return checked


def targets_text(checked: list[dict]) -> str:
    lines = ["Targets of issue 13 (ratios of req/s taken in this run)",
             "=" * 55]
    for entry in checked:
        reference = entry["reference"]
        lines.append(
            "%-7s twistgate on %-7s >= %.1fx %-14s measured %-7s %s"
            % (entry["scenario"], INTERPRETER_LABELS[entry["interpreter"]], entry["target"],
               reference, _fmt(entry["ratio"], "%.2fx"), entry["verdict"])
        )
    return "\n".join(lines)


def text(results: dict) -> str:
    """Everything a run prints at its end."""
    parts = []
    params = results["settings"]
    parts.append(
        "twistgate benchmark, %s: %s rounds of %gs per gateway, interleaved; warm-up %gs "
        "(PyPy %gs); median shown" % (results["date"], params["rounds"], params["duration"],
                                      params["warmup"], params["pypy_warmup"])
    )
    mach = results["machine"]
    parts.append("machine: %s cores, %s, %s GiB; wrk, the gateway and the upstream share the "
                 "cores" % (mach["nproc"], mach["cpu"], mach["memory_gib"]))
    code = results.get("twistgate_code") or {}
    if code.get("commit"):
        parts.append("twistgate code: %s commit %s (%s)%s" % (
            "exported" if code.get("exported_to") else "work tree at", code["commit"][:10],
            code.get("subject", ""),
            "; uncommitted: " + " ".join(code["uncommitted"]) if code.get("uncommitted") else ""))
    parts.append("")
    for scenario in results["scenarios"].values():
        parts.append(scenario_tables(scenario))
    parts.append(targets_text(results["targets"]))
    return "\n".join(parts)


def save(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


# ------------------------------------------------------------------------------------------
# Markdown, for docs/performance.md: python -m bench.report [bench/results/latest.json]


def markdown(results: dict) -> str:
    """The results as Markdown tables: one per scenario, twistgate's interpreters as rows."""
    out = []
    for scenario in results["scenarios"].values():
        gateways = scenario["gateways"]
        direct = median(scenario, "direct")
        latency = direct is not None
        out.append("**%s** (wrk -t%d -c%d)%s" % (
            scenario["title"], scenario["threads"], scenario["connections"],
            "; background load before it: %s%% of all cores" %
            scenario["background"]["busy_percent_of_all_cores"]
            if scenario.get("background") else ""))
        out.append("")
        interpreters = [k.split("-", 1)[1] for k in gateways if k.startswith("twistgate-")]
        header = ["gateway", "req/s", "p50 ms", "p99 ms"]
        if latency:
            header += ["added p50 ms", "added p99 ms"]
        header += ["RSS MB", "CPU"]
        header += ["twistgate %s / this" % INTERPRETER_LABELS[i] for i in interpreters]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join("---" if i == 0 else "--:" for i in range(len(header))) + "|")
        for key, gateway in gateways.items():
            m = gateway.get("median") or {}
            row = [gateway["label"], _rps(m.get("requests_per_sec")), _fmt(m.get("p50_ms")),
                   _fmt(m.get("p99_ms"))]
            if latency:
                added = gateway["kind"] != "direct" and m
                row += [_fmt(m["p50_ms"] - direct["p50_ms"], "%+.2f") if added else "",
                        _fmt(m["p99_ms"] - direct["p99_ms"], "%+.2f") if added else ""]
            row += [_fmt(m.get("rss_mb"), "%.1f"), _fmt(m.get("cpu_percent"), "%.0f%%")]
            for interpreter in interpreters:
                row.append(_fmt(ratio(scenario, interpreter, key), "%.2fx")
                           if gateway["kind"] == "reference" else "")
            out.append("| " + " | ".join(row) + " |")
        for key, reason in scenario["skipped"].items():
            out.append("| %s | %s |" % (key, reason) + " |" * (len(header) - 2))
        out.append("")
    out.append("| target | measured | verdict |")
    out.append("|---|--:|---|")
    for entry in results.get("targets", []):
        if entry["verdict"] == "not measured":
            continue
        out.append("| %s: twistgate on %s ≥ %.1f× %s | %s | %s |" % (
            entry["scenario"], INTERPRETER_LABELS[entry["interpreter"]], entry["target"],
            entry["reference"], _fmt(entry["ratio"], "%.2f×"), entry["verdict"]))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    import sys

    path = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parent / "results" /
                                                     "latest.json")
    print(markdown(json.loads(Path(path).read_text())))
