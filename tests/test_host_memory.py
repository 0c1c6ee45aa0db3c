"""`retain_freed_memory` stops the page faults of re-allocated large buffers (glibc only)."""

import json
import subprocess
import sys

import pytest

from keras_vit import host_memory
from keras_vit.host_memory import _glibc

# In a child process: the setting is process-wide and must not leak into the test session.
CHILD = r"""
import ctypes, importlib.util, json, resource, sys
# The module alone (it needs no Keras), without importing the whole package.
spec = importlib.util.spec_from_file_location("host_memory", sys.argv[2])
host_memory = importlib.util.module_from_spec(spec)
spec.loader.exec_module(host_memory)
_glibc, retain_freed_memory = host_memory._glibc, host_memory.retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
libc = _glibc()
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
SIZE = 32 << 20

def buffer():  # what a tensor's storage is: malloc, write every byte, free
    p = libc.malloc(SIZE)
    ctypes.memset(p, 1, SIZE)
    libc.free(p)

def faults_of_fresh_buffers():
    buffer()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        buffer()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

print(json.dumps(faults_of_fresh_buffers()))
"""


def _faults(mode):
    out = subprocess.run([sys.executable, "-c", CHILD, mode, host_memory.__file__],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(_glibc() is None, reason="needs glibc's mallopt")
def test_freed_buffers_are_reused_without_page_faults():
    # By default each 32 MiB buffer is fresh mmap'ed memory: one fault per 4 KiB page.
    default, retained = _faults("default"), _faults("retain")
    assert default > 0.9 * 5 * (32 << 20) // 4096
    assert retained < 0.01 * default
