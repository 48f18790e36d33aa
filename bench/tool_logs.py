"""Logs made on the spot by real tools, for the fidelity benchmark.

Each function runs a real tool in a scratch directory, on a terminal (a pty,
so stderr is interleaved with stdout exactly as a node agent capturing one
pty sees it, CRLF line ends included), and returns a ``Log``: the output and
the ground truth the rendered task is checked against, taken from that
output by the tool's own format:

- identity lines: the line that names each failure (the failing test, target
  or file position);
- cause lines: the line that says why (the message, the wanted and got).

With ``failing=False`` the same project runs clean, with tests named after
errors (``test_error_handling``, ``TestFailover``): what it keeps is noise.
Sizes put 0.1 to 1 MB of output around failures in the middle.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path
from typing import NamedTuple, Optional


class Log(NamedTuple):
    output: bytes
    identity: list[bytes]
    cause: list[bytes]


# Tools that find no terminal colours write plain text, as an agent asks.
_ENV = {"LC_ALL": "C", "NO_COLOR": "1", "FORCE_COLOR": "0", "TERM": "dumb",
        "CARGO_TERM_COLOR": "never", "PYTHONDONTWRITEBYTECODE": "1"}


def on_pty(command: list[str], cwd: Path, env: Optional[dict[str, str]] = None,
           timeout: float = 600) -> bytes:
    """Run ``command`` with stdout and stderr on one pseudo-terminal."""
    master, slave = pty.openpty()
    # A wide terminal: tools that wrap to its width would cut lines.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
    child = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=slave,
                             stderr=slave, env={**os.environ, **_ENV, **(env or {})},
                             start_new_session=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    child.wait(timeout=timeout)
    os.close(master)
    return b"".join(chunks)


def _lines(log: bytes, pattern: bytes) -> list[bytes]:
    return [line.rstrip(b"\r") for line in log.splitlines() if re.search(pattern, line)]


def _project(workdir: Path, files: dict[str, str]) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return workdir


FILES = 240
FAILING_FILES = range(10, FILES - 10, 23)  # 10 files, none near either end
TESTS = 2500
FAILING_TESTS = range(600, 1900, 200)  # 7 tests, far from the first and last output
TARGETS = 3000
FAILING_TARGETS = range(500, 2500, 250)  # 8 targets


def compile_c(workdir: Path, failing: bool = True) -> Log:
    """``make -k -j2`` over C files full of warnings, ten of them with an error."""
    files = {}
    for n in range(FILES):
        unused = "\n".join(f"    int unused_{k} = {k};" for k in range(24))
        bad = failing and n in FAILING_FILES
        ret = f"    return missing_symbol_{n};\n" if bad else "    return 0;\n"
        files[f"error_unit_{n:03d}.c"] = f"int unit_{n:03d}(void) {{\n{unused}\n{ret}}}\n"
    objects = " ".join(f"error_unit_{n:03d}.o" for n in range(FILES))
    files["Makefile"] = f"all: {objects}\n%.o: %.c\n\tgcc -Wall -c $< -o $@\n"
    log = on_pty(["make", "-k", "-j2"], _project(workdir, files))
    # make names the target that failed, gcc says why.
    return Log(log, _lines(log, rb"\*\*\* \[.*\] Error "), _lines(log, rb": error: "))


def run_pytest(workdir: Path, failing: bool = True) -> Log:
    """``pytest -v`` over many passing tests with a few failures in the middle."""
    body = "\n".join(
        f"def test_error_handling_{n:04d}():\n"
        f"    assert {n} {'!=' if failing and n in FAILING_TESTS else '=='} {n}\n"
        for n in range(TESTS))
    project = _project(workdir, {"test_generated.py": body})
    log = on_pty([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider",
                  "-p", "no:randomly", "-o", "addopts=", "test_generated.py"], project)
    return Log(log, _lines(log, rb"::test_error_handling_\d+ FAILED"),
               _lines(log, rb"^E +assert \d+ != \d+"))


def make_keep_going(workdir: Path, failing: bool = True) -> Log:
    """``make -k`` over shell recipes that print a lot, a few of which fail."""
    rules = []
    for n in range(TARGETS):
        fail = (f"; echo 'step {n}: cannot open input.dat' >&2; exit 3"
                if failing and n in FAILING_TARGETS else "")
        rules.append(f"t{n}:\n\t@for i in 1 2 3; do echo \"[t{n}] processing chunk $$i of 3\"; "
                     f"done{fail}\n")
    names = " ".join(f"t{n}" for n in range(TARGETS))
    project = _project(workdir, {"Makefile": f".PHONY: all {names}\nall: {names}\n" + "".join(rules)})
    log = on_pty(["make", "-k"], project)
    return Log(log, _lines(log, rb"\*\*\* \[.*\] Error "), _lines(log, rb"cannot open input"))


GO_TESTS = 2000
GO_FAILING = range(500, 1600, 150)


def go_test(workdir: Path, failing: bool = True) -> Log:
    """``go test -v`` over a package of many tests named after errors."""
    cases = []
    for n in range(GO_TESTS):
        got = n + 1 if failing and n in GO_FAILING else n
        cases.append(f"func TestFailover{n:04d}(t *testing.T) {{\n"
                     f"\tif got := {got}; got != {n} {{\n"
                     f"\t\tt.Errorf(\"case {n}: want {n}, got %d\", got)\n\t}}\n}}\n")
    files = {"go.mod": "module example.com/p\n\ngo 1.19\n",
             "p_test.go": "package p\n\nimport \"testing\"\n\n" + "\n".join(cases)}
    log = on_pty(["go", "test", "-v", "-count=1", "./..."], _project(workdir, files),
                 env=_go_env(workdir))
    return Log(log, _lines(log, rb"--- FAIL: TestFailover\d+"),
               _lines(log, rb"p_test\.go:\d+: case \d+: want"))


def _go_env(workdir: Path) -> dict[str, str]:
    return {"GOCACHE": str(workdir / ".gocache"), "GOPATH": str(workdir / ".gopath"),
            "GOFLAGS": "-mod=mod", "GOPROXY": "off", "GO111MODULE": "on"}


GO_PACKAGES = 200


def go_build(workdir: Path, failing: bool = True) -> Log:
    """``go build -x`` over many packages (every command it runs is printed),
    one of them with errors that name no error word."""
    files = {"go.mod": "module example.com/p\n\ngo 1.19\n"}
    imports = []
    for n in range(GO_PACKAGES):
        bad = failing and n == GO_PACKAGES // 2
        body = "return thing + 1" if bad else f"return {n}"
        files[f"errs{n:03d}/errs.go"] = (f"package errs{n:03d}\n\nfunc Value() int {{ {body} }}\n")
        imports.append(f"\t_ \"example.com/p/errs{n:03d}\"")
    files["main.go"] = "package main\n\nimport (\n" + "\n".join(imports) + "\n)\n\nfunc main() {}\n"
    log = on_pty(["go", "build", "-x", "-o", os.devnull, "./..."], _project(workdir, files),
                 env=_go_env(workdir))
    return Log(log, _lines(log, rb"^# example\.com/p/errs\d+"),
               _lines(log, rb"errs\.go:\d+:\d+: undefined: thing"))


NODE_TESTS = 3000
NODE_FAILING = range(700, 2400, 400)


def _node_project(workdir: Path, failing: bool) -> Path:
    cases = []
    for n in range(NODE_TESTS):
        got = n + 1 if failing and n in NODE_FAILING else n
        cases.append(f"test('error handling case {n}', () => {{\n"
                     f"  assert.strictEqual({got}, {n}, 'case {n}: want {n}, got {got}');\n}});\n")
    return _project(workdir, {"cases.test.js": "const test = require('node:test');\n"
                              "const assert = require('node:assert');\n" + "".join(cases)})


def node_tap(workdir: Path, failing: bool = True) -> Log:
    """``node --test`` with the TAP reporter."""
    log = on_pty(["node", "--test", "--test-reporter=tap", "cases.test.js"],
                 _node_project(workdir, failing))
    return Log(log, _lines(log, rb"^not ok \d+ - error handling case"),
               _lines(log, rb"^    case \d+: want \d+, got"))


def node_spec(workdir: Path, failing: bool = True) -> Log:
    """``node --test`` with the reporter it picks on a terminal (spec)."""
    log = on_pty(["node", "--test", "cases.test.js"], _node_project(workdir, failing))
    return Log(log, _lines(log, "^\\s*\u2716 error handling case \\d+ \\(".encode()),
               _lines(log, rb"AssertionError.*: case \d+: want"))


def run_unittest(workdir: Path, failing: bool = True) -> Log:
    """``python -m unittest -v``."""
    cases = "\n".join(
        f"    def test_error_path_{n:04d}(self):\n"
        f"        self.assertEqual({n + 1 if failing and n in FAILING_TESTS else n}, {n}, "
        f"'case {n}')\n" for n in range(TESTS))
    project = _project(workdir, {"test_gen.py": f"import unittest\n\nclass T(unittest.TestCase):\n{cases}\n"})
    log = on_pty([sys.executable, "-m", "unittest", "-v", "test_gen"], project)
    return Log(log, _lines(log, rb"test_error_path_\d+ \(test_gen\.T.*\) \.\.\. FAIL"),
               _lines(log, rb"AssertionError: \d+ != \d+ : case"))


def shell_script(workdir: Path, failing: bool = True) -> Log:
    """A deploy script under ``sh``: chatty steps, a missing file, a missing
    command, a permission problem."""
    steps = []
    for n in range(4000):
        steps.append(f"echo 'step {n}: copying assets for page-{n % 7}.html ... done'")
        if failing and n == 1200:
            steps.append("cp ./release/missing-bundle.tgz /tmp/ 2>&1 || true")
        if failing and n == 2000:
            steps.append("deploy-release --now || true")
        if failing and n == 2800:
            steps.append("./locked.sh || true")
    project = _project(workdir, {"deploy.sh": "\n".join(steps) + "\n", "locked.sh": "echo hi\n"})
    (project / "locked.sh").chmod(0o644)
    log = on_pty(["bash", "deploy.sh"], project)
    found = _lines(log, rb"No such file or directory|command not found|Permission denied")
    return Log(log, found, found)  # each line names the failure and says why


CARGO_TESTS = 2500
CARGO_FAILING = range(500, 2100, 320)


def cargo_test(workdir: Path, failing: bool = True) -> Log:
    """``cargo test`` over a crate of many tests named after errors."""
    cases = []
    for n in range(CARGO_TESTS):
        got = n + 1 if failing and n in CARGO_FAILING else n
        cases.append(f"    #[test]\n    fn error_handling_{n:04d}() {{\n"
                     f"        assert_eq!({got}, {n}, \"case {n}\");\n    }}\n")
    files = {"Cargo.toml": "[package]\nname = \"errs\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
             "src/lib.rs": "#[cfg(test)]\nmod tests {\n" + "".join(cases) + "}\n"}
    log = on_pty(["cargo", "test", "--offline", "--", "--test-threads=1"],
                 _project(workdir, files), env={"CARGO_TARGET_DIR": str(workdir / "target")})
    return Log(log, _lines(log, rb"^test tests::error_handling_\d+ \.\.\. FAILED"),
               _lines(log, rb"^  left: \d+"))


JAVA_FILES = 80
JAVA_FAILING = range(10, 70, 12)


def _java_classes(count: int, failing: bool, directory: str, package: str) -> dict[str, str]:
    """``count`` classes full of raw-type warnings; those of JAVA_FAILING
    return a missing symbol when ``failing``."""
    files = {}
    for n in range(count):
        raw = "\n".join(f"        java.util.List l{k} = new java.util.ArrayList(); l{k}.add(\"x\");"
                        for k in range(12))
        bad = failing and n in JAVA_FAILING
        files[f"{directory}ErrorPath{n:03d}.java"] = (
            f"{package}public class ErrorPath{n:03d} {{\n    public static int run() {{\n{raw}\n"
            f"        return {'missingSymbol' + str(n) if bad else '0'};\n    }}\n}}\n")
    return files


def javac(workdir: Path, failing: bool = True) -> Log:
    """``javac -Xlint:all`` over many classes full of warnings, a few with errors."""
    files = _java_classes(JAVA_FILES, failing, "", "")
    project = _project(workdir, files)
    log = on_pty(["javac", "-Xlint:all", "-Xmaxwarns", "100000", "-Xmaxerrs", "1000", "-d",
                  "out", *sorted(files)], project)
    return Log(log, _lines(log, rb"ErrorPath\d+\.java:\d+: error: cannot find symbol"),
               _lines(log, rb"symbol: +variable missingSymbol\d+"))


MAVEN_CLASSES = 120
MAVEN_FAILING = range(15, 110, 19)
_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>p</groupId><artifactId>errs</artifactId><version>1</version>
  <properties><maven.compiler.release>17</maven.compiler.release>
    <project.build.sourceEncoding>UTF-8</project.build.sourceEncoding></properties>
  <dependencies><dependency><groupId>org.junit.jupiter</groupId>
    <artifactId>junit-jupiter</artifactId><version>5.10.2</version><scope>test</scope>
  </dependency></dependencies>
  <build><plugins>
    <plugin><artifactId>maven-compiler-plugin</artifactId><version>3.13.0</version></plugin>
    <plugin><artifactId>maven-resources-plugin</artifactId><version>3.3.1</version></plugin>
    <plugin><artifactId>maven-surefire-plugin</artifactId><version>3.2.5</version></plugin>
  </plugins></build>
</project>
"""


def maven_junit(workdir: Path, failing: bool = True) -> Log:
    """``mvn -o test``: JUnit 5 under surefire, chatty tests named after errors
    (offline: the plugins must be in the local repository)."""
    files = {"pom.xml": _POM}
    for n in range(MAVEN_CLASSES):
        tests = []
        for k in range(8):
            got = 4 if failing and n in MAVEN_FAILING and k == 3 else 3
            tests.append(f"  @Test void errorHandling{k}() {{\n"
                         f"    for (int i = 0; i < 6; i++) System.out.println(\"[{n}.{k}] handled \" + i);\n"
                         f"    assertEquals(3, {got}, \"case {n}.{k}\");\n  }}\n")
        files[f"src/test/java/p/ErrorPath{n:03d}Test.java"] = (
            "package p;\nimport org.junit.jupiter.api.Test;\n"
            "import static org.junit.jupiter.api.Assertions.assertEquals;\n"
            f"class ErrorPath{n:03d}Test {{\n" + "".join(tests) + "}\n")
    log = on_pty(["mvn", "-o", "-B", "test"], _project(workdir, files))
    return Log(log, _lines(log, rb"^\[ERROR\] p\.ErrorPath\d+Test\.errorHandling\d .*<<< FAILURE!"),
               _lines(log, rb"^org\.opentest4j\.AssertionFailedError: case \d+\.\d"))


def python_traceback(workdir: Path, failing: bool = True) -> Log:
    """A Python job that logs every record and prints the traceback of the
    bad ones (``traceback.print_exc``) and goes on."""
    script = textwrap.dedent(f"""\
        import sys, traceback
        def parse(n):
            if {failing!r} and n % 1500 == 700:
                raise KeyError(f"record {{n}} has no field 'id'")
            return n
        for n in range(6000):
            print(f"record {{n}}: parsed, 3 fields, status=ok")
            try:
                parse(n)
            except Exception:
                traceback.print_exc()
        """)
    log = on_pty([sys.executable, "job.py"], _project(workdir, {"job.py": script}))
    return Log(log, _lines(log, rb"^Traceback \(most recent call last\)"),
               _lines(log, rb"^KeyError: \"record \d+"))


MYPY_FILES = 420


def run_mypy(workdir: Path, failing: bool = True) -> Log:
    """mypy over many modules that reveal types (notes), a few with errors."""
    files = {}
    for n in range(MYPY_FILES):
        value = '"x"' if failing and n % 60 == 30 else str(n)
        reveals = "\n".join(f"reveal_type(error_value_{k})" for k in range(6))
        values = "\n".join(f"error_value_{k}: int = {n}" for k in range(6))
        files[f"mod_{n:03d}.py"] = f"{values}\nbad: int = {value}\n{reveals}\n"
    project = _project(workdir, files)
    log = on_pty([sys.executable, "-m", "mypy", "--no-incremental", "--no-error-summary",
                  *sorted(files)], project)
    return Log(log, _lines(log, rb"mod_\d+\.py:\d+: error: Incompatible types"),
               _lines(log, rb"mod_\d+\.py:\d+: error: Incompatible types"))


def clang(workdir: Path, failing: bool = True) -> Log:
    """``clang++ -Wall -c`` over C++ files full of warnings, ten of them with
    an error: an undeclared name (the message says it) or a call no overload
    takes (the note that follows says why)."""
    files = {}
    for n in range(FILES):
        unused = "\n".join(f"    int unused_{k} = {k};" for k in range(24))
        ret = "0"
        if failing and n in FAILING_FILES:
            ret = f"missing_symbol_{n}" if n % 2 else f'scale_{n:03d}("{n}")'
        files[f"error_unit_{n:03d}.cpp"] = (
            f"static int scale_{n:03d}(int value) {{ return value * 2; }}\n"
            f"int unit_{n:03d}() {{\n{unused}\n    return {ret} + scale_{n:03d}(1);\n}}\n")
    log = on_pty(["clang++", "-Wall", "-c", *sorted(files)], _project(workdir, files))
    return Log(log, _lines(log, rb"error_unit_\d+\.cpp:\d+:\d+: error: "),
               _lines(log, rb": error: use of undeclared identifier|: note: candidate function not viable"))


def _c_units(count: int, warnings: int, failing: bool) -> dict[str, str]:
    files = {}
    for n in range(count):
        unused = "\n".join(f"    int unused_{k} = {k};" for k in range(warnings))
        ret = f"missing_symbol_{n}" if failing and n in FAILING_FILES else "0"
        files[f"error_unit_{n:03d}.c"] = f"int unit_{n:03d}(void) {{\n{unused}\n    return {ret};\n}}\n"
    return files


def cmake_make(workdir: Path, failing: bool = True) -> Log:
    """CMake configures a C library (Makefile generator) and builds it with
    ``make -k``: ten of its sources fail, the build goes on past them."""
    files = _c_units(FILES, 12, failing)
    sources = " ".join(sorted(files))
    files["CMakeLists.txt"] = ("cmake_minimum_required(VERSION 3.10)\nproject(errs C)\n"
                               "add_compile_options(-Wall)\n"
                               f"add_library(errs STATIC {sources})\n")
    script = ("cmake -S . -B build -G 'Unix Makefiles' && "
              "cmake --build build -- -k")
    log = on_pty(["sh", "-c", script], _project(workdir, files))
    # make names the object that failed, gcc says why.
    return Log(log, _lines(log, rb"\*\*\* \[.*error_unit_\d+\.c\.o\] Error "),
               _lines(log, rb": error: "))


def ninja_build(workdir: Path, failing: bool = True) -> Log:
    """``ninja -k 0`` over a hand-written build.ninja: each failed edge is a
    ``FAILED: `` line, the command, then the compiler's output."""
    files = _c_units(FILES, 20, failing)
    edges = "".join(f"build {name[:-2]}.o: cc {name}\n" for name in sorted(files))
    files["build.ninja"] = ("rule cc\n  command = gcc -Wall -c $in -o $out\n"
                            "  description = CC $out\n" + edges)
    log = on_pty(["ninja", "-k", "0", "-j2"], _project(workdir, files))
    return Log(log, _lines(log, rb"^FAILED: .*error_unit_\d+\.o"), _lines(log, rb": error: "))


VET_PACKAGES = 150
VET_FAILING = {40: 'fmt.Printf("%d\\n", "x")', 60: "n := 1; n = n; _ = n",
               75: 'fmt.Sprintf("%s", "unused")', 95: "if n := 1; n == 1 || n == 1 { return 0 }",
               110: 'fmt.Println("%d", 1)'}


def go_vet(workdir: Path, failing: bool = True) -> Log:
    """``go vet -x`` over many packages that use fmt and errors (every vet
    command and its config is printed), five of them with vet findings."""
    files = {"go.mod": "module example.com/p\n\ngo 1.19\n"}
    imports = []
    for n in range(VET_PACKAGES):
        body = VET_FAILING[n] if failing and n in VET_FAILING else "_ = 0"
        files[f"errs{n:03d}/errs.go"] = (
            f"package errs{n:03d}\n\nimport (\n\t\"errors\"\n\t\"fmt\"\n)\n\n"
            f"var ErrMissing = errors.New(\"errs{n:03d}: missing\")\n\n"
            f"func Value() int {{\n\t{body}\n\tfmt.Println(\"value\")\n\treturn {n}\n}}\n")
        imports.append(f"\t_ \"example.com/p/errs{n:03d}\"")
    files["main.go"] = "package main\n\nimport (\n" + "\n".join(imports) + "\n)\n\nfunc main() {}\n"
    log = on_pty(["go", "vet", "-x", "./..."], _project(workdir, files), env=_go_env(workdir))
    # vet puts the package ("# example.com/p/errs040") before its findings.
    return Log(log, _lines(log, rb"^# example\.com/p/errs\d+"),
               _lines(log, rb"^errs\d+/errs\.go:\d+:\d+: "))


RUFF_PACKAGES = 240
RUFF_FAILING = range(20, RUFF_PACKAGES - 20, 40)  # 6 packages


def run_ruff(workdir: Path, failing: bool = True) -> Log:
    """``ruff check -v`` package by package (a monorepo's lint job), over
    modules named after errors; a few use an undefined name or do not parse."""
    files = {"ruff.toml": "[lint]\nselect = [\"E4\", \"E7\", \"E9\", \"F\"]\n"}
    for n in range(RUFF_PACKAGES):
        for k in range(5):
            value = "error_count + 1"
            if failing and n in RUFF_FAILING and k == 2:
                value = "error_count +" if n == RUFF_FAILING[2] else "missing_total + 1"
            files[f"pkg_{n:03d}/error_handling_{k}.py"] = (
                f"def handle_error_{k}(error_count: int) -> int:\n    return {value}\n")
    script = ('status=0; for pkg in pkg_*; do ruff check -v --no-cache "$pkg" || status=1; done; '
              'exit $status')
    log = on_pty(["bash", "-c", script], _project(workdir, files))
    return Log(log, _lines(log, rb"^ *--> pkg_\d+/error_handling_\d\.py:\d+:\d+"),
               _lines(log, rb"^F821 Undefined name|^invalid-syntax: "))


GRADLE_FILES = 60


def gradle_build(workdir: Path, failing: bool = True) -> Log:
    """``gradle --offline build`` of a plain Java project (no plugins to
    download) whose classes are full of lint warnings, a few with errors."""
    files = {"settings.gradle": "rootProject.name = 'errs'\n",
             "build.gradle": ("apply plugin: 'java'\ntasks.withType(JavaCompile) {\n"
                              "  options.compilerArgs += ['-Xlint:all', '-Xmaxwarns', '100000']\n}\n")}
    files.update(_java_classes(GRADLE_FILES, failing, "src/main/java/p/", "package p;\n"))
    project = _project(workdir, files)
    log = on_pty(["gradle", "--offline", "--no-daemon", "-g", str(project / ".gradle-home"),
                  "build"], project)
    return Log(log, _lines(log, rb"ErrorPath\d+\.java:\d+: error: cannot find symbol"
                                rb"|^Execution failed for task ':compileJava'"),
               _lines(log, rb"symbol: +variable missingSymbol\d+"))


_ALL = {
    "gcc via make -k": (compile_c, ("make", "gcc")),
    "pytest -v": (run_pytest, ()),
    "make -k": (make_keep_going, ("make",)),
    "go test -v": (go_test, ("go",)),
    "go build -x": (go_build, ("go",)),
    "node --test tap": (node_tap, ("node",)),
    "node --test spec": (node_spec, ("node",)),
    "unittest -v": (run_unittest, ()),
    "shell script": (shell_script, ("bash",)),
    "cargo test": (cargo_test, ("cargo",)),
    "javac": (javac, ("javac",)),
    "maven junit5": (maven_junit, ("mvn",)),
    "python traceback": (python_traceback, ()),
    "mypy": (run_mypy, ()),
    "clang++": (clang, ("clang++",)),
    "cmake (make)": (cmake_make, ("cmake", "make", "gcc")),
    "ninja": (ninja_build, ("ninja", "gcc")),
    "go vet -x": (go_vet, ("go",)),
    "ruff check": (run_ruff, ("ruff", "bash")),
    "gradle": (gradle_build, ("gradle", "java")),
}

#: The tools of this machine: name -> function(workdir, failing) -> Log.
TOOLS = {name: function for name, (function, needs) in _ALL.items()
         if all(shutil.which(tool) for tool in needs)}
