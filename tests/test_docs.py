"""The README's configuration table matches JournalConfig."""

from __future__ import annotations

import dataclasses
import pathlib
import re

import pytest

from journal import JournalConfig

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _rows():
    if not README.exists():  # e.g. tests run from an installed sdist elsewhere
        pytest.skip("README.md is not beside the tests")
    pattern = re.compile(r"^\| `(\w+)` \| `(JOURNAL_\w+)` \| `([^`]*)` \|", re.M)
    return {name: (variable, default) for name, variable, default in pattern.findall(README.read_text())}


def test_every_field_is_documented_with_its_default():
    rows = _rows()
    defaults = JournalConfig()
    assert set(rows) == {field.name for field in dataclasses.fields(JournalConfig)}
    for name, (variable, default) in rows.items():
        assert variable == "JOURNAL_" + name.upper()
        assert default == _shown(getattr(defaults, name)), name


def _shown(value):
    if isinstance(value, str):
        return value
    if hasattr(value, "keys"):
        return repr(dict(value))
    return repr(value)
