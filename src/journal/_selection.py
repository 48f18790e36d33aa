"""Compiled buffer or pure twin: the one place that reads the switch.

``pure_reason()`` is the only reader of ``JOURNAL_NO_EXTENSIONS``.
``journal.buffer`` (import time), ``setup.py`` (build time), the tests'
``buffer_cls`` fixture, the crash test's child process and the benchmarks
all ask it, so the rule cannot drift between them: anything but ``""`` or
``"0"`` means pure, and so does any interpreter other than CPython.

This file imports nothing from the package: setup.py loads it by path
(``runpy.run_path``) before the package is built.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Any, Mapping, Optional

ENV_VAR = "JOURNAL_NO_EXTENSIONS"

COMPILED = "c"
PURE = "python"
#: implementation name -> the module that holds its HeadTailBuffer
MODULES = {COMPILED: "journal._buffer", PURE: "journal._buffer_py"}

#: What the pure twin costs (the README's benchmarks: 7 to 21 times the
#: compiled append's time) and how to get the compiled buffer instead; said
#: at build time by setup.py and at import time by select().
PURE_COST = "appends are up to 20x slower (more with highlights)"
HOW_TO_COMPILE = (
    "install a wheel (pip install --only-binary taskjournal taskjournal) or a C compiler "
    "and the Python headers, then reinstall (pip install --force-reinstall --no-binary "
    f"taskjournal taskjournal); set {ENV_VAR}=1 to choose the pure twin and silence this"
)


class PureTwinWarning(RuntimeWarning):
    """The compiled buffer was wanted but is not installed: the pure twin runs."""


def flag(value: Optional[str]) -> bool:
    """An on/off environment switch: anything but unset, ``""`` or ``"0"`` is on."""
    return value not in (None, "", "0")


def pure_reason(
    environ: Optional[Mapping[str, str]] = None, implementation: Optional[str] = None
) -> Optional[str]:
    """Why this process must use the pure twin, or None if the compiled
    buffer is wanted.  Defaults: ``os.environ`` and this interpreter."""
    environ = os.environ if environ is None else environ
    implementation = sys.implementation.name if implementation is None else implementation
    if flag(environ.get(ENV_VAR)):
        return f"{ENV_VAR}={environ[ENV_VAR]!r} selects the pure-Python twin"
    if implementation != "cpython":
        return f"{implementation} is not CPython: the compiled buffer is CPython-only"
    return None


def no_extensions() -> bool:
    """True when the pure twin is wanted (see ``pure_reason``)."""
    return pure_reason() is not None


def load(name: str) -> Any:
    """The HeadTailBuffer class of implementation ``name`` (``"c"`` or
    ``"python"``).  No fallback: a missing extension raises ImportError."""
    return importlib.import_module(MODULES[name]).HeadTailBuffer


def name_of(cls: type) -> str:
    """The implementation name of a HeadTailBuffer class (inverse of ``load``),
    for passing the twin to a child process."""
    for name, module in MODULES.items():
        if cls.__module__ == module:
            return name
    raise ValueError(f"{cls.__module__}.{cls.__qualname__} is not a HeadTailBuffer twin")


def select() -> tuple[str, Any]:
    """``(name, class)`` of the buffer this process uses by default: the
    compiled one unless ``pure_reason()`` says otherwise, or the pure twin if
    the extension was not built (a source install without a compiler)."""
    if no_extensions():
        return PURE, load(PURE)  # chosen: nothing to say
    try:
        return COMPILED, load(COMPILED)
    except ImportError as exc:  # built without a compiler: the twin does the same job
        # Said once (a module is imported once), where it costs: the
        # install succeeded and nothing else would tell.
        warnings.warn(
            f"taskjournal: the compiled buffer is not installed ({exc}); using the pure-Python "
            f"twin, whose {PURE_COST}. To get it: {HOW_TO_COMPILE}.",
            PureTwinWarning, stacklevel=3,
        )
        return PURE, load(PURE)
