"""The stub ``journal/_buffer.pyi`` says what the compiled buffer is.

mypy.stubtest imports the built module and compares it with the stub
(every public name, signature, property, classmethod, positional-only
parameter and the class's layout); the name checks below add what stubtest
lets pass: private names the tests use (``_scan_path``), and dunders the
class defines itself (``__hash__``, ``__reduce__``, ``__repr__``).  A pure
run (see ``journal._selection``) has no compiled module and skips.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

mypy_stubtest = pytest.importorskip("mypy.stubtest", reason="mypy is in the test extra")

# Defined by the compiled module or class but not worth a stub entry: what
# Cython generates, and the module's private helpers and imports.
CYTHON_MACHINERY = {
    "__builtins__", "__doc__", "__file__", "__loader__", "__name__", "__package__",
    "__spec__", "__test__", "__reduce_cython__", "__setstate_cython__",
    "__new__", "__pyx_vtable__",
    # Cython fills every rich comparison slot when __eq__ is defined; the
    # others answer NotImplemented, as object's do.
    "__ne__", "__lt__", "__le__", "__gt__", "__ge__",
}
MODULE_INTERNALS = {
    "_Filter", "_Scanner",  # cdef classes only HeadTailBuffer reaches
    "_hl", "_shared",  # the module's imports of journal._highlights and journal._buffer_shared
    "_i",  # the loop variable of the case-folding table's set-up
}


@pytest.fixture(scope="module")
def compiled(both_buffer_classes):
    return importlib.import_module(both_buffer_classes[0].__module__)


def _stub_names(compiled) -> tuple[set[str], set[str]]:
    """The names the stub gives the module and the HeadTailBuffer class."""
    tree = ast.parse(Path(compiled.__file__).with_name("_buffer.pyi").read_text("utf-8"))
    module_names: set[str] = set()
    class_names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "HeadTailBuffer":
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    class_names.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    class_names.add(item.target.id)
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            module_names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            module_names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            module_names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return module_names, class_names


def test_stubtest_finds_no_difference(compiled, tmp_path):
    # From an empty directory: no project configuration, and only the
    # installed package (module and stub) can be found.
    run = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", compiled.__name__],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_stub_names_everything_the_module_defines(compiled):
    module_names, class_names = _stub_names(compiled)
    defined = set(vars(compiled)) - CYTHON_MACHINERY - MODULE_INTERNALS
    assert defined == module_names - {"_BytesLike"}  # the stub's own alias
    members = set(vars(compiled.HeadTailBuffer)) - CYTHON_MACHINERY
    assert members == class_names


def test_the_pure_twin_has_the_stubbed_api(compiled, both_buffer_classes):
    _, class_names = _stub_names(compiled)
    pure = both_buffer_classes[1]
    public = {name for name in vars(pure) if not name.startswith("_")}
    assert public == {name for name in class_names if not name.startswith("_")}
    for name in class_names & {"__eq__", "__hash__", "__reduce__", "__repr__", "__sizeof__",
                               "__len__", "__init__"}:
        assert name in vars(pure), name
    assert pure.__hash__ is None and compiled.HeadTailBuffer.__hash__ is None
