"""Fixtures shared by the suite.

``buffer_cls`` runs a test once per HeadTailBuffer implementation, the way
propcache and multidict test their twins.  Tests take the class from the
fixture and never import an implementation themselves.
"""

from __future__ import annotations

import importlib
import os

import pytest

from journal import _buffer_py

NO_EXTENSIONS = os.environ.get("JOURNAL_NO_EXTENSIONS", "") not in ("", "0")


def _compiled_buffer_class():
    if NO_EXTENSIONS:
        pytest.skip("JOURNAL_NO_EXTENSIONS is set: this run covers the pure twin only")
    # No fallback here: when the extension is missing the test must fail.
    return importlib.import_module("journal._buffer").HeadTailBuffer


@pytest.fixture(
    scope="session",
    params=[pytest.param("c", marks=pytest.mark.c_extension), "python"],
)
def buffer_cls(request):
    """The HeadTailBuffer class of one implementation."""
    if request.param == "c":
        return _compiled_buffer_class()
    return _buffer_py.HeadTailBuffer


@pytest.fixture(scope="session")
def both_buffer_classes():
    """(compiled, pure): for tests that compare the twins directly."""
    return _compiled_buffer_class(), _buffer_py.HeadTailBuffer
