"""Optional OpenTelemetry spans for the journal (the ``otel`` extra).

``instrument()`` wraps TaskJournal's durable calls (register, start,
complete, fail, cancel, reattach, checkpoint, close, and the ``_async``
twins of the first six) in spans, and gives
every task a span of its own from ``register`` (or ``reattach`` after a
restart) to its terminal state, whoever ends it: the caller, a deadline or
a lost lease found by the sweep.  Attributes: ``taskjournal.task_id``,
``taskjournal.node_id``, ``taskjournal.status`` and, once a task ends,
``taskjournal.bytes`` (what its streams were given) and
``taskjournal.error``.  ``uninstrument()`` puts the methods back.

No cost when off: until ``instrument()`` is called nothing is wrapped,
nothing of OpenTelemetry is imported, and the methods are the class's own.
The append handle is never wrapped in any case: it is the hot path, one C
call, and a span per append would cost more than the append.

This module sits above the journal (it imports TaskJournal; nothing in the
journal imports it), like an OpenTelemetry instrumentor.
"""

from __future__ import annotations

import functools
import importlib
import threading
from typing import Any, Callable, Optional

from journal import __version__
from journal.journal import TaskJournal
from journal.records import TaskRecord

__all__ = ["instrument", "instrumented", "uninstrument"]

#: The calls that change the store: one span each.
DURABLE = ("register", "start", "complete", "fail", "cancel", "reattach", "checkpoint", "close")
#: Their awaitable twins (close_async runs close, traced already).
DURABLE_ASYNC = ("register_async", "start_async", "complete_async", "fail_async",
                 "cancel_async", "reattach_async")
#: Every state change, the sweep's included, passes here: it ends task spans.
TRANSITION = "_transition"
PREFIX = "taskjournal."

_lock = threading.Lock()
#: name -> (the method TaskJournal had, whether the class itself defined it).
_originals: dict[str, tuple[Callable[..., Any], bool]] = {}
#: (id of the journal, task id) -> the task's open span.
_task_spans: dict[tuple[int, str], Any] = {}


def instrumented() -> bool:
    return bool(_originals)


def instrument(tracer_provider: Optional[Any] = None) -> None:
    """Trace every TaskJournal of this process from now on, through
    ``tracer_provider`` (default: OpenTelemetry's global one).  Needs the
    ``otel`` extra (``opentelemetry-api``); calling it twice does nothing."""
    try:
        trace = importlib.import_module("opentelemetry.trace")
    except ImportError:
        raise ImportError(
            "tracing needs the 'otel' extra: python -m pip install 'taskjournal[otel]'"
        ) from None
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    tracer = provider.get_tracer("taskjournal", __version__)
    error = trace.Status(trace.StatusCode.ERROR)
    with _lock:
        if _originals:
            return
        for name in (*DURABLE, *DURABLE_ASYNC, TRANSITION):
            _originals[name] = (getattr(TaskJournal, name), name in TaskJournal.__dict__)
        for name in DURABLE:
            setattr(TaskJournal, name, _traced_call(name, getattr(TaskJournal, name), tracer))
        for name in DURABLE_ASYNC:
            method = getattr(TaskJournal, name)
            setattr(TaskJournal, name, _traced_async(name, method, tracer, error))
        setattr(TaskJournal, TRANSITION, _traced_transition(getattr(TaskJournal, TRANSITION), error))
        # The task spans start where a task enters this journal.
        for name in ("register", "reattach"):
            setattr(TaskJournal, name, _opening(getattr(TaskJournal, name), tracer))
        for name in ("register_async", "reattach_async"):
            setattr(TaskJournal, name, _opening_async(getattr(TaskJournal, name), tracer))
        setattr(TaskJournal, "close", _closing(TaskJournal.close))


def uninstrument() -> None:
    """Put TaskJournal's own methods back; open task spans are ended."""
    with _lock:
        for name, (method, own) in _originals.items():
            if own:
                setattr(TaskJournal, name, method)
            else:
                delattr(TaskJournal, name)  # inherited again (the async mixin's)
        _originals.clear()
        spans = list(_task_spans.values())
        _task_spans.clear()
    for span in spans:
        span.end()


def _attributes(record: TaskRecord) -> dict[str, Any]:
    return {PREFIX + "task_id": record.task_id, PREFIX + "node_id": record.node_id,
            PREFIX + "status": record.status.value}


def _traced_call(name: str, method: Callable[..., Any], tracer: Any) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(journal: TaskJournal, *args: Any, **kwargs: Any) -> Any:
        attributes = {PREFIX + "task_id": args[0]} if args and isinstance(args[0], str) else {}
        with tracer.start_as_current_span(PREFIX + name, attributes=attributes) as span:
            # An exception is recorded on the span (and the span marked as
            # an error) by start_as_current_span itself, then re-raised.
            result = method(journal, *args, **kwargs)
            if isinstance(result, TaskRecord):
                span.set_attributes(_attributes(result))
            return result

    return call


def _traced_async(name: str, method: Callable[..., Any], tracer: Any,
                  error: Any) -> Callable[..., Any]:
    @functools.wraps(method)
    async def call(journal: TaskJournal, *args: Any, **kwargs: Any) -> Any:
        attributes = {PREFIX + "task_id": args[0]} if args and isinstance(args[0], str) else {}
        with tracer.start_as_current_span(PREFIX + name, attributes=attributes) as span:
            record = await method(journal, *args, **kwargs)
            span.set_attributes(_attributes(record))
        # The async twins change state without _transition: the end is here.
        _end_task(journal, record, error)
        return record

    return call


def _open_task(journal: TaskJournal, record: TaskRecord, tracer: Any) -> None:
    span = tracer.start_span(PREFIX + "task", attributes=_attributes(record))
    with _lock:
        previous = _task_spans.pop((id(journal), record.task_id), None)
        _task_spans[(id(journal), record.task_id)] = span
    if previous is not None:
        previous.end()


def _opening(method: Callable[..., Any], tracer: Any) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(journal: TaskJournal, *args: Any, **kwargs: Any) -> Any:
        record = method(journal, *args, **kwargs)
        _open_task(journal, record, tracer)
        return record

    return call


def _opening_async(method: Callable[..., Any], tracer: Any) -> Callable[..., Any]:
    @functools.wraps(method)
    async def call(journal: TaskJournal, *args: Any, **kwargs: Any) -> Any:
        record = await method(journal, *args, **kwargs)
        _open_task(journal, record, tracer)
        return record

    return call


def _end_task(journal: TaskJournal, record: TaskRecord, error: Any) -> None:
    """End the task's span if ``record`` is its end (once: the span is taken)."""
    if not record.status.terminal:
        return
    with _lock:
        span = _task_spans.pop((id(journal), record.task_id), None)
    if span is None:
        return
    span.set_attributes(_attributes(record))
    span.set_attribute(PREFIX + "bytes", sum(view.total for view in record.streams.values()))
    if record.error:
        span.set_attribute(PREFIX + "error", record.error)
    if record.status.value != "completed":
        span.set_status(error)
    span.end()


def _traced_transition(method: Callable[..., Any], error: Any) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(journal: TaskJournal, task_id: str, target: Any, **changes: Any) -> Any:
        record = method(journal, task_id, target, **changes)
        _end_task(journal, record, error)
        return record

    return call


def _closing(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(journal: TaskJournal, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(journal, *args, **kwargs)
        finally:
            # Tasks still in flight stay in the store for the next hub: their
            # spans end here, saying so, and the next hub opens new ones.
            with _lock:
                mine = [key for key in _task_spans if key[0] == id(journal)]
                spans = [_task_spans.pop(key) for key in mine]
            for span in spans:
                span.set_attribute(PREFIX + "left_in_flight", True)
                span.end()

    return call
