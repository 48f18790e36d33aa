"""The floor the append cost is measured against: a minimal compiled
head+tail ring, built by the benchmark itself beside ours.

It does what an append cannot do less of: take the bytes of an exact
``bytes`` (or a buffer-protocol view), memcpy into the head, then into a
ring.  No scanner, no seal flag, no counters beyond the ring's own, no
checks.  It is compiled by the same compiler with the same flags as the
buffer (setuptools' defaults), so the ratio is the cost of what ours adds.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

SOURCE = '''\
# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.string cimport memcpy


cdef class FloorRing:
    cdef unsigned char *head
    cdef unsigned char *ring
    cdef Py_ssize_t head_cap, head_len, cap, start, length

    def __cinit__(self, Py_ssize_t head, Py_ssize_t tail):
        self.head = <unsigned char *>PyMem_Malloc(head + 1)
        self.ring = <unsigned char *>PyMem_Malloc(tail + 1)
        self.head_cap = head
        self.cap = tail

    def __dealloc__(self):
        PyMem_Free(self.head)
        PyMem_Free(self.ring)

    def append(self, object data):
        cdef Py_buffer view
        if PyBytes_CheckExact(data):
            self.write(<const unsigned char *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
            return
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        self.write(<const unsigned char *>view.buf, view.len)
        PyBuffer_Release(&view)

    cdef inline void write(self, const unsigned char *data, Py_ssize_t size) noexcept:
        cdef Py_ssize_t room = self.head_cap - self.head_len, end, first
        if room > 0:
            if room > size:
                room = size
            memcpy(self.head + self.head_len, data, room)
            self.head_len += room
            data += room
            size -= room
        if size >= self.cap:
            memcpy(self.ring, data + size - self.cap, self.cap)
            self.start = 0
            self.length = self.cap
            return
        end = self.start + self.length
        if end >= self.cap:
            end -= self.cap
        first = self.cap - end
        if first > size:
            first = size
        memcpy(self.ring + end, data, first)
        memcpy(self.ring, data + first, size - first)
        self.length += size
        if self.length > self.cap:
            self.start += self.length - self.cap
            if self.start >= self.cap:
                self.start -= self.cap
            self.length = self.cap
'''

_BUILD = (
    "from setuptools import setup; from Cython.Build import cythonize; "
    "setup(ext_modules=cythonize(['floor_ring.pyx'], quiet=True), "
    "script_args=['build_ext', '--inplace', '-q'])"
)


def floor_class(workdir: Path) -> type:
    """Build the floor ring in ``workdir`` and return its class."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "floor_ring.pyx").write_text(SOURCE)
    subprocess.run([sys.executable, "-c", _BUILD], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL)
    built = next(workdir.glob("floor_ring*.so"), None) or next(workdir.glob("floor_ring*.pyd"))
    spec = importlib.util.spec_from_file_location("floor_ring", built)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FloorRing  # type: ignore[no-any-return]
