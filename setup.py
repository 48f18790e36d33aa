"""Builds the compiled head+tail buffer; everything else is in pyproject.toml.

Environment switches (build time):
  JOURNAL_NO_EXTENSIONS=1  build a pure-Python wheel (no compiler needed)
  JOURNAL_CYTHON_TRACE=1   line tracing, for coverage and profilers
A compile failure falls back to the pure twin with a warning, except under
cibuildwheel (CIBUILDWHEEL=1), where a wheel without the extension would be
a silent regression.
"""

import os
import runpy
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# The compiled-or-pure rule, shared with journal.buffer and the tests.  Loaded
# by path: the package is not importable before it is built.
_selection = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "src", "journal", "_selection.py")
)
_flag = _selection["flag"]

STRICT = _flag(os.environ.get("CIBUILDWHEEL"))
PURE = _selection["no_extensions"]() and not STRICT


class OptionalBuildExt(build_ext):
    """build_ext that turns a compile failure into a pure-Python install."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any toolchain failure
            self._fall_back(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._fall_back(exc)

    def _fall_back(self, exc):
        if STRICT:
            raise exc
        print(
            f"WARNING: the compiled buffer could not be built ({exc}); taskjournal will "
            f"use its pure-Python twin, whose {_selection['PURE_COST']} "
            "(journal.buffer.IMPLEMENTATION == 'python', and importing journal warns). "
            f"To get it: {_selection['HOW_TO_COMPILE']}.",
            file=sys.stderr,
        )


def extensions():
    if PURE:
        return []
    from Cython.Build import cythonize

    trace = _flag(os.environ.get("JOURNAL_CYTHON_TRACE"))
    ext = Extension(
        "journal._buffer",
        ["src/journal/_buffer.pyx"],
        include_dirs=["src/journal"],  # _scan.h
        define_macros=[("CYTHON_TRACE", "1")] if trace else [],
    )
    return cythonize(
        [ext],
        compiler_directives={"language_level": "3", "linetrace": trace},
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
