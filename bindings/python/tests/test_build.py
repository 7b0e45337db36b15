"""The build: the cffi declarations derive from the committed header, and a source
distribution is refused with an explanation."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cffi

import ringbroker
from ringbroker._native import lib

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent
REPO = PACKAGE.parent.parent
sys.path.insert(0, str(PACKAGE))
import ringbroker_build  # noqa: E402  (bindings/python/ringbroker_build.py)


def test_cdef_is_derived_from_the_header():
    header = (REPO / "include" / "ringbroker.h").read_text()
    cdef = ringbroker_build.cdef_from_header(header)
    assert 'extern "C"' not in cdef
    assert "#define RINGBROKER_ARGUMENT_BYTES_MAX ..." in cdef  # an expression: from the compiler
    assert "#define RINGBROKER_NOT_FOUND 7" in cdef
    assert not [line for line in cdef.splitlines() if line.startswith("#") and not line.startswith("#define")]
    cffi.FFI().cdef(cdef)  # cffi accepts it
    # Every function of the header is in the compiled module.
    functions = set(re.findall(r"^[A-Za-z_][\w \*]*?\b(ringbroker_\w+)\(", header, re.MULTILINE))
    assert len(functions) > 50
    assert all(hasattr(lib, n) for n in functions), sorted(n for n in functions if not hasattr(lib, n))
    assert lib.RINGBROKER_ARGUMENT_BYTES_MAX == 1 << 30


def test_cdef_filter_cases():
    text = "\n".join([
        "#ifndef X_H", "#define X_H", "#include <stdint.h>", "#define A 12", "#define B (1 << 4)",
        "#define F(x) ((x) + 1)", "#ifdef __cplusplus", 'extern "C" {', "#endif", "int f(void);",
        "#ifdef __cplusplus", "}", "#endif", "#endif",
    ])
    assert ringbroker_build.cdef_from_header(text).split() == [
        "#define", "A", "12", "#define", "B", "...", "int", "f(void);"]


def test_an_sdist_is_refused_with_a_reason(tmp_path):
    done = subprocess.run([sys.executable, "setup.py", "sdist", "--dist-dir", str(tmp_path)], cwd=PACKAGE,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "built from the ringbroker repository only" in done.stderr + done.stdout
    assert not list(tmp_path.iterdir())


def test_version_follows_the_workspace():
    cargo = (REPO / "Cargo.toml").read_text()
    assert f'version = "{ringbroker.__version__}"' in cargo
