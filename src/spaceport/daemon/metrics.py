"""``/metrics``: the daemon's state as Prometheus metrics, made at each scrape."""

from __future__ import annotations

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    SummaryMetricFamily,
)

from .state import PHASES, Backend


class DaemonCollector:
    """Turns the daemon's state into Prometheus metrics at each scrape."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def collect(self):
        snap = self.backend.state.snapshot()
        moved_bytes, moved_files = self.backend.tracker.totals()
        yield _labelled(CounterMetricFamily, "spaceport_transferred_bytes",
                        "Bytes copied, by task (deploy, clone, autosave, final save...).",
                        "task", moved_bytes)
        yield _labelled(CounterMetricFamily, "spaceport_transferred_files",
                        "Files copied, by task.", "task", moved_files)
        saves = snap["saves"]
        yield _labelled(CounterMetricFamily, "spaceport_saves", "Saves to the primary, by "
                        "result.", "result", {"ok": saves["ok"], "failed": saves["failed"]})
        yield SummaryMetricFamily("spaceport_save_duration_seconds", "Time spent in saves.",
                                  count_value=saves["ok"] + saves["failed"],
                                  sum_value=saves["seconds_total"])
        last = snap["last_save"]
        yield GaugeMetricFamily("spaceport_last_save_duration_seconds", "Duration of the "
                                "last save.", value=last["seconds"] if last else 0)
        yield GaugeMetricFamily("spaceport_last_successful_save_timestamp_seconds",
                                "Unix time of the last successful save (0: none yet).",
                                value=snap["last_successful_save"] or 0)
        yield _labelled(CounterMetricFamily, "spaceport_errors", "Errors, by where they "
                        "happened (save, lock, clone, daemon).", "where", snap["error_counts"])
        yield _labelled(GaugeMetricFamily, "spaceport_phase", "1 for the current phase.",
                        "phase", {p: int(p == snap["phase"]) for p in PHASES})
        yield GaugeMetricFamily("spaceport_ready", "1 when stage-in is done.",
                                value=int(snap["ready"]))
        yield GaugeMetricFamily("spaceport_healthy", "1 when nothing is failing.",
                                value=int(snap["health"] == "ok"))
        for key, doc in (("bytes_total", "Bytes to copy"), ("bytes_done", "Bytes copied")):
            yield _labelled(GaugeMetricFamily, f"spaceport_task_{key}",
                            f"{doc} by the latest run of each task.", "task",
                            {t["name"]: t[key] for t in snap["tasks"]})


def _labelled(family, name: str, doc: str, label: str, values: dict):
    metric = family(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        metric.add_metric([key], value)
    return metric
