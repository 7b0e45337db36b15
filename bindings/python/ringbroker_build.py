"""The cffi builder of ``ringbroker._native`` (API mode), used by setup.py.

The declarations given to cffi are derived from the committed ``include/ringbroker.h``
when the package is built, never copied by hand: :func:`cdef_from_header` drops the
preprocessor lines cffi's ``cdef`` does not take, keeps each ``#define NAME <integer>``
constant, turns a constant given by an expression (``(1 << 30)``) into ``#define NAME
...`` (in API mode the C compiler supplies the value) and drops the ``extern "C"``
lines inside ``#ifdef __cplusplus`` blocks. The extension is then compiled against
the real header, so a declaration that does not match the library cannot build.
"""

from __future__ import annotations

import re
from pathlib import Path

import cffi

_DEFINE = re.compile(r"^#define\s+([A-Za-z_][A-Za-z0-9_]*)(?:\s+(.*?))?\s*$")
_INTEGER = re.compile(r"^-?(0[xX][0-9a-fA-F]+|\d+)[uUlL]*$")


def cdef_from_header(text: str) -> str:
    """Returns the part of a C header cffi's ``cdef`` accepts (see the module doc)."""
    out: list[str] = []
    skip_depth = 0  # > 0 inside an `#ifdef __cplusplus` block (and blocks nested in it)
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            directive = stripped[1:].split()[0] if len(stripped) > 1 else ""
            if directive in ("if", "ifdef", "ifndef"):
                if skip_depth or "__cplusplus" in stripped:
                    skip_depth += 1
            elif directive == "endif" and skip_depth:
                skip_depth -= 1
            elif directive == "define" and not skip_depth:
                out.append(_define_line(stripped))
            continue
        if not skip_depth:
            out.append(line)
    return "\n".join(out) + "\n"


def _define_line(line: str) -> str:
    match = _DEFINE.match(line)
    if not match or match.group(2) is None:  # include guards, function-like macros
        return ""
    name, value = match.group(1), match.group(2)
    value = re.sub(r"/\*.*?\*/|//.*$", "", value).strip()
    if _INTEGER.match(value):
        return f"#define {name} {value}"
    if re.fullmatch(r"[()\s\d<>|+*xXa-fA-F-]+", value):  # an integer expression
        return f"#define {name} ..."
    return ""


def make_builder(repo: Path, static_library: Path) -> cffi.FFI:
    """The FFI builder for ``ringbroker._native``, linking ``static_library``, with the
    binding's batch helpers (``native/rbpy.h``, ``native/rbpy.c``) compiled in."""
    include = repo / "include"
    native = Path(__file__).resolve().parent / "native"
    ffibuilder = cffi.FFI()
    ffibuilder.cdef(cdef_from_header((include / "ringbroker.h").read_text()))
    ffibuilder.cdef(cdef_from_header((native / "rbpy.h").read_text()))
    ffibuilder.set_source(
        "ringbroker._native",
        '#include "ringbroker.h"\n#include "rbpy.h"',
        sources=[str(native / "rbpy.c")],
        include_dirs=[str(include), str(native)],
        extra_compile_args=["-O2"],
        extra_objects=[str(static_library)],
        libraries=["pthread", "dl", "m"],
        # Keep the Rust library's own symbols private to the extension, and drop
        # the sections nothing references.
        extra_link_args=["-Wl,--exclude-libs,ALL", "-Wl,--gc-sections"],
    )
    return ffibuilder
