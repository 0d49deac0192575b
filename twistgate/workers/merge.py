"""
The whole gateway from its workers' figures: their /status.json reports summed, their /metrics
summed, and what workers that have ended had counted.

Each worker reports the same shapes a single gateway serves (its routes, upstreams and filters
are the same configuration's), so one walk merges them: counts add up, lists of routes or
targets are matched by name or URL, flags are true if any worker's is, and a few figures that do
not add are taken otherwise: latency percentiles are the largest of the workers' (an upper bound
of the whole gateway's: a percentile of a union is not a function of the parts' percentiles;
status.py then replaces the last minute's with exact ones from the workers' latency buckets),
event-loop lag and "out for" times the largest, names and settings the first.

A worker that ends takes its counters with it; L{Retired} keeps them (its last report, counters
only), so that a reload, which replaces every worker, never sends a request count back in time.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

#: Figures that do not add up across workers: the largest is the gateway's.
LARGEST = frozenset(["p50", "p90", "p99", "event_loop_lag_ms", "out_for_seconds"])

#: Names and settings, the same in every worker: the first worker's is the gateway's.
FIRST = frozenset(["version", "time", "uptime_seconds", "weight", "balance", "health_check",
                   "url", "name", "prefix", "upstream", "filter", "state", "hit_ratio",
                   "path"])

#: Keys of a report that are counters: what an ended worker still contributes.
COUNTERS = frozenset(["total", "classes", "requests", "errors", "client_errors", "outcomes",
                      "lookups", "hits", "results", "rejections", "shadow_rejections",
                      "store_failures", "panics", "transitions", "partial", "failures"])

#: Keys whose value holds counters further down (kept in an ended worker's projection).
HOLDERS = frozenset(["routes", "upstreams", "targets", "circuits", "cache", "ratelimit",
                     "filters", "aggregates", "parts"])

#: Keys that name an entry of a list, in the order they are looked for.
IDENTITIES = ("name", "url", "filter")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _identity(entry):
    if isinstance(entry, dict):
        for key in IDENTITIES:
            if key in entry:
                return key, entry[key]
    return None


def merge(values: list, how: str = "sum"):
    """One value from the same-shaped C{values} of several workers (see the module docstring)."""
    present = [value for value in values if value is not None]
    if not present:
        return None
    first = present[0]
    if how == "first" or isinstance(first, str):
        return first
    if isinstance(first, bool):
        return any(bool(value) for value in present)
    if _number(first):
        numbers = [value for value in present if _number(value)]
        return max(numbers) if how == "max" else round(sum(numbers), 6)
    if isinstance(first, dict):
        dicts = [value for value in present if isinstance(value, dict)]
        merged = {}
        for d in dicts:
            for key in d:
                if key in merged:
                    continue
                parts = [other[key] for other in dicts if key in other]
                merged[key] = merge(parts, "first" if key in FIRST else
                                    "max" if key in LARGEST else how)
        return merged
    if isinstance(first, list):
        lists = [value for value in present if isinstance(value, list)]
        if any(_identity(entry) is not None for entry in first):
            order: list = []
            groups: dict = {}
            for entries in lists:
                for entry in entries:
                    key = _identity(entry)
                    if key not in groups:
                        order.append(key)
                        groups[key] = []
                    groups[key].append(entry)
            return [merge(groups[key], how) for key in order]
        width = max(len(value) for value in lists)
        return [merge([value[i] for value in lists if i < len(value)], how)
                for i in range(width)]
    return first


def counters(report):
    """The counters of a report (and what names them): what an ended worker still counted."""
    if isinstance(report, list):
        return [counters(entry) for entry in report]
    if not isinstance(report, dict):
        return report
    kept = {}
    for key, value in report.items():
        if key in IDENTITIES:
            kept[key] = value
        elif key in COUNTERS:
            kept[key] = counters(value) if isinstance(value, dict) and key == "requests" else value
        elif key in HOLDERS:
            kept[key] = counters(value)
    if "requests" in kept and isinstance(kept["requests"], dict):
        kept["requests"] = {k: v for k, v in kept["requests"].items() if k in COUNTERS}
    return kept


#: /metrics families that describe one process: shown per worker, never summed.
PER_PROCESS = ("process_", "python_", "twistgate_event_loop_lag_seconds")

#: Gauges that add up across workers (requests in flight); any other gauge (a target's up, a
#: circuit's state, a pool's panic) is each worker's own view, and the largest is shown.
SUMMED_GAUGES = ("in_flight", "in_flight_requests")


def parse_metrics(text: str) -> list:
    """[(family name, type, help, [(sample name, labels, value)])] of a /metrics text."""
    families = []
    for family in text_string_to_metric_families(text):
        samples = [(s.name, dict(s.labels), s.value) for s in family.samples]
        families.append((family.name, family.type, family.documentation, samples))
    return families


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample_line(name: str, labels: dict, value: float) -> str:
    if labels:
        inner = ",".join('%s="%s"' % (k, _escape(str(v))) for k, v in labels.items())
        return "%s{%s} %s\n" % (name, inner, floatToGoString(value))
    return "%s %s\n" % (name, floatToGoString(value))


class Families:
    """Metric families being put together: summed samples, or samples per worker."""

    def __init__(self):
        self.order: list[str] = []
        self.meta: dict[str, tuple[str, str]] = {}
        self.samples: dict[str, dict] = {}

    def _family(self, name: str, kind: str, documentation: str) -> dict:
        if name not in self.meta:
            self.order.append(name)
            self.meta[name] = (kind, documentation)
            self.samples[name] = {}
        return self.samples[name]

    def add(self, name, kind, documentation, samples, worker: str | None = None) -> None:
        """Add C{samples} to the family's sums (or, with C{worker}, as that worker's)."""
        family = self._family(name, kind, documentation)
        for sample, labels, value in samples:
            if worker is not None:
                labels = dict(labels, worker=worker)
            key = (sample, tuple(sorted(labels.items())))
            if key not in family:
                family[key] = value
            elif kind == "gauge" and not name.endswith(SUMMED_GAUGES):
                family[key] = max(family[key], value)
            elif name != "twistgate_info":
                family[key] += value

    def text(self) -> str:
        out = []
        for name in self.order:
            kind, documentation = self.meta[name]
            out.append("# HELP %s %s\n" % (name, documentation.replace("\\", "\\\\")
                                           .replace("\n", "\\n")))
            out.append("# TYPE %s %s\n" % (name, kind))
            for (sample, labels), value in self.samples[name].items():
                out.append(_sample_line(sample, dict(labels), value))
        return "".join(out)


def add_worker_metrics(families: Families, text: str, worker: str) -> None:
    """One live worker's /metrics: per-process families per worker, the rest into the sums."""
    for name, kind, documentation, samples in parse_metrics(text):
        if name.startswith(PER_PROCESS):
            families.add(name, kind, documentation, samples, worker=worker)
        else:
            families.add(name, kind, documentation, samples)


class Retired:
    """
    What workers that have ended had counted: their last report's counters, and their last
    /metrics' counters and histograms.
    """

    def __init__(self):
        self.report: dict | None = None
        self.metrics: list = []

    def add(self, worker) -> None:
        if worker.status is not None:
            kept = counters(worker.status)
            self.report = kept if self.report is None else merge([self.report, kept])
        if worker.metrics:
            for name, kind, documentation, samples in parse_metrics(worker.metrics):
                if kind in ("counter", "histogram") and not name.startswith(PER_PROCESS):
                    self.metrics.append((name, kind, documentation, samples))
        # Keep the list short: fold what is here into one set of families' samples.
        if len(self.metrics) > 64:
            folded = Families()
            for family in self.metrics:
                folded.add(*family)
            self.metrics = [
                (name, folded.meta[name][0], folded.meta[name][1],
                 [(sample, dict(labels), value)
                  for (sample, labels), value in folded.samples[name].items()])
                for name in folded.order
            ]
