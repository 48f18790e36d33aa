"""The Prometheus collector, scraped and parsed with prometheus_client's own parser."""

from __future__ import annotations

import subprocess
import sys

import pytest

prometheus_client = pytest.importorskip("prometheus_client")  # the test extra installs it
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from journal.metrics import JournalCollector  # noqa: E402


def _scrape(journal):
    registry = prometheus_client.CollectorRegistry()
    registry.register(JournalCollector(journal))
    text = prometheus_client.generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + "".join(f"[{v}]" for v in sample.labels.values())
            samples[key] = sample.value
    return samples


def test_scrape_reports_tasks_bytes_appends_and_checkpoint_lag(make_journal, store_url):
    journal = make_journal(head_bytes=10, tail_bytes=10)
    journal.register("a", "n")
    journal.register("b", "n")
    journal.start("a")
    out = journal.stream("a")
    for _ in range(5):
        out.append(b"x" * 100)
    journal.fail("b", "boom")
    samples = _scrape(journal)
    assert samples["taskjournal_tasks[running]"] == 1
    assert samples["taskjournal_tasks[failed]"] == 1
    assert samples["taskjournal_tasks[completed]"] == 0
    assert samples["taskjournal_appends"] == 5
    assert samples["taskjournal_bytes_written"] == 500
    assert samples["taskjournal_bytes_held"] == 20
    assert samples["taskjournal_bytes_dropped"] == 480
    assert samples["taskjournal_store_errors_total"] == 0
    if store_url.startswith("sqlite"):
        assert samples["taskjournal_checkpoint_lag_bytes"] == 500
        journal.checkpoint()
        after = _scrape(journal)
        assert after["taskjournal_checkpoint_lag_bytes"] == 0
        assert 0 <= after["taskjournal_checkpoint_age_seconds"] < 60
    else:
        assert "taskjournal_checkpoint_age_seconds" not in samples


def test_without_the_extra_the_import_names_it():
    code = "import sys; sys.modules['prometheus_client'] = None\nimport journal.metrics"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1 and "taskjournal[prometheus]" in done.stderr
