"""Prometheus metrics of a TaskJournal (the ``prometheus`` extra).

    from prometheus_client import REGISTRY, start_http_server
    from journal.metrics import JournalCollector

    REGISTRY.register(JournalCollector(journal))
    start_http_server(9464)

The collector reads ``TaskJournal.stats()`` at scrape time, so it costs
nothing between scrapes and never touches the append path.
"""

from __future__ import annotations

from collections.abc import Iterator

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised by the import test
    raise ImportError(
        "journal.metrics needs the 'prometheus' extra: "
        "python -m pip install 'taskjournal[prometheus]'"
    ) from exc

from journal.journal import TaskJournal

__all__ = ["JournalCollector"]

_PREFIX = "taskjournal"


class JournalCollector(Collector):
    """Exposes one journal's counts and byte totals to a Prometheus registry."""

    def __init__(self, journal: TaskJournal, prefix: str = _PREFIX) -> None:
        self.journal = journal
        self.prefix = prefix

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self.journal.stats()
        name = self.prefix
        tasks = GaugeMetricFamily(f"{name}_tasks", "Tasks in the journal by status.",
                                  labels=["status"])
        for status, count in sorted(stats["by_status"].items()):
            tasks.add_metric([status], count)
        yield tasks
        yield GaugeMetricFamily(f"{name}_tasks_in_memory", "Tasks held in memory.",
                                value=stats["tasks_in_memory"])
        # Gauges, not counters: they cover the tasks held in memory, and go
        # down when finished tasks are let go of.
        for key, help_text in (
            ("bytes_held", "Stream bytes kept (head and tail), in memory or spilled."),
            ("bytes_resident", "Stream bytes in memory (what memory_budget bounds)."),
            ("bytes_spilled", "Stream bytes moved out of memory to the store."),
            ("bytes_dropped", "Stream bytes dropped from the middle of the streams held."),
            ("bytes_written", "Stream bytes appended to the streams held."),
            ("appends", "Append calls to the streams held."),
        ):
            yield GaugeMetricFamily(f"{name}_{key}", help_text, value=stats[key])
        yield CounterMetricFamily(f"{name}_store_errors", "Store writes that failed.",
                                  value=stats["store_errors"])
        yield GaugeMetricFamily(
            f"{name}_checkpoint_lag_bytes", "Appended bytes not yet in a durable checkpoint.",
            value=stats["bytes_written"] - stats["bytes_checkpointed"])
        age = stats["checkpoint_age"]
        if age is not None:
            yield GaugeMetricFamily(f"{name}_checkpoint_age_seconds",
                                    "Seconds since every stream was last checkpointed.",
                                    value=age)
