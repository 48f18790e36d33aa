"""OpenTelemetry spans with the ``otel`` extra (journal._tracing): one per
durable call and one per task's lifetime, with node, status and bytes; and
nothing at all, not even an import, until tracing is turned on."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from journal import JournalConfig, TaskJournal, TaskStatus
from journal import _tracing

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _tracing.instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        _tracing.uninstrument()


def _by_name(exporter, name):
    return [span for span in exporter.get_finished_spans() if span.name == name]


def test_durable_calls_and_task_lifetimes_are_spans(spans, buffer_cls):
    with TaskJournal(buffer_class=buffer_cls, config=JournalConfig(sweep_interval=0)) as journal:
        journal.register("ok", "node-1")
        journal.start("ok")
        journal.stream("ok").append(b"x" * 1000)
        journal.stream("ok", "stderr").append(b"y" * 24)
        journal.complete("ok", {"exit_code": 0})
        journal.register("bad", "node-2")
        journal.fail("bad", "exit status 2", {"exit_code": 2})
    names = [span.name for span in spans.get_finished_spans()]
    for name in ("register", "start", "complete", "fail", "close"):
        assert "taskjournal." + name in names, names
    complete = _by_name(spans, "taskjournal.complete")[0]
    assert complete.attributes["taskjournal.task_id"] == "ok"
    assert complete.attributes["taskjournal.node_id"] == "node-1"
    assert complete.attributes["taskjournal.status"] == "completed"
    tasks = {span.attributes["taskjournal.task_id"]: span for span in _by_name(spans, "taskjournal.task")}
    assert set(tasks) == {"ok", "bad"}
    assert tasks["ok"].attributes["taskjournal.bytes"] == 1024
    assert tasks["ok"].attributes["taskjournal.status"] == "completed"
    assert tasks["ok"].status.status_code is not StatusCode.ERROR
    assert tasks["bad"].attributes["taskjournal.error"] == "exit status 2"
    assert tasks["bad"].status.status_code is StatusCode.ERROR
    # The lifetime span covers the calls: it starts with register, ends with the end.
    register = [s for s in _by_name(spans, "taskjournal.register")
                if s.attributes["taskjournal.task_id"] == "ok"][0]
    assert register.start_time <= tasks["ok"].start_time <= complete.end_time
    assert tasks["ok"].end_time >= complete.start_time


def test_the_async_twins_are_traced_alike(spans, buffer_cls):
    import asyncio

    async def scenario():
        journal = TaskJournal(buffer_class=buffer_cls, config=JournalConfig(sweep_interval=0))
        await journal.register_async("a", "node-3")
        await journal.start_async("a")
        journal.stream("a").append(b"z" * 10)
        await journal.fail_async("a", "exit status 4", {"exit_code": 4})
        await journal.close_async()

    asyncio.run(scenario())
    names = {span.name for span in spans.get_finished_spans()}
    assert {"taskjournal.register_async", "taskjournal.start_async", "taskjournal.fail_async",
            "taskjournal.close"} <= names, names
    [task] = _by_name(spans, "taskjournal.task")
    assert task.attributes["taskjournal.status"] == "failed"
    assert task.attributes["taskjournal.bytes"] == 10
    assert "taskjournal.left_in_flight" not in task.attributes


def test_a_task_the_sweep_ends_ends_its_span_too(spans, buffer_cls):
    config = JournalConfig(sweep_interval=0, lease_timeout=0.05)
    with TaskJournal(buffer_class=buffer_cls, config=config) as journal:
        journal.register("silent", "node-9")
        time.sleep(0.15)
        journal.sweep()
        assert journal.get("silent").status is TaskStatus.LOST
    [task] = _by_name(spans, "taskjournal.task")
    assert task.attributes["taskjournal.status"] == "lost"
    assert task.status.status_code is StatusCode.ERROR


def test_a_failed_call_is_an_error_span(spans, buffer_cls):
    with TaskJournal(buffer_class=buffer_cls, config=JournalConfig(sweep_interval=0)) as journal:
        with pytest.raises(Exception, match="nope"):
            journal.start("nope")
    [start] = _by_name(spans, "taskjournal.start")
    assert start.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in start.events)


def test_tasks_left_in_flight_at_close_end_their_spans(spans, tmp_path, buffer_cls):
    url = f"sqlite:///{tmp_path / 'j.db'}"
    with TaskJournal(url, buffer_class=buffer_cls, config=JournalConfig(sweep_interval=0)) as journal:
        journal.register("running", "node-1")
        journal.start("running")
    [task] = _by_name(spans, "taskjournal.task")
    assert task.attributes["taskjournal.left_in_flight"] is True
    # The next hub opens a new span when the node re-attaches.
    with TaskJournal(url, buffer_class=buffer_cls, config=JournalConfig(sweep_interval=0)) as journal:
        journal.reattach("running", "node-1")
        journal.complete("running")
    done = [s for s in _by_name(spans, "taskjournal.task")
            if s.attributes.get("taskjournal.status") == "completed"]
    assert len(done) == 1 and "taskjournal.left_in_flight" not in done[0].attributes


def test_uninstrument_puts_the_methods_back(buffer_cls):
    names = (*_tracing.DURABLE, *_tracing.DURABLE_ASYNC, _tracing.TRANSITION)
    own = {name: getattr(TaskJournal, name) for name in names}
    defined = set(TaskJournal.__dict__)
    _tracing.instrument()
    assert _tracing.instrumented() and TaskJournal.register is not own["register"]
    _tracing.uninstrument()
    assert not _tracing.instrumented()
    assert {name: getattr(TaskJournal, name) for name in own} == own
    assert set(TaskJournal.__dict__) == defined  # the mixin's methods inherited again


def test_off_costs_nothing_not_even_an_import():
    """Without instrument(), a journal's whole life imports nothing of
    OpenTelemetry and runs the class's own methods."""
    code = ("import sys\n"
            "from journal import TaskJournal\n"
            "import journal._tracing\n"
            "own = TaskJournal.__dict__['register']\n"
            "with TaskJournal() as j:\n"
            "    j.register('t', 'n'); j.stream('t').append(b'x'); j.complete('t')\n"
            "assert TaskJournal.register is own\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"


def test_without_the_extra_instrument_names_it():
    code = ("import sys; sys.modules['opentelemetry'] = None\n"
            "from journal import _tracing\n"
            "try:\n"
            "    _tracing.instrument()\n"
            "except ImportError as exc:\n"
            "    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert "pip install 'taskjournal[otel]'" in done.stdout, done.stderr
