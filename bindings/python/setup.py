"""Builds the ``ringbroker`` package from the ringbroker repository.

``pip install ./bindings/python`` (from the repository root) runs, through this file:

1. ``cargo build --release -p ringbroker-ffi`` at the repository root, which makes
   ``target/release/libringbroker.a`` (``$CARGO_TARGET_DIR`` is honoured);
2. cffi in API mode: the declarations come from ``include/ringbroker.h`` as committed
   and from the binding's batch helpers, ``native/rbpy.h`` (see ``ringbroker_build.py``),
   and ``ringbroker._native`` is compiled against those headers with ``native/rbpy.c``
   and linked with the static library (plus pthread, dl, m), so the installed package
   needs no ``libringbroker.so`` at run time.

The package is built from the repository only: it needs the Rust sources and the
header two directories up. An sdist would not contain them, so ``sdist`` fails with
an explanation instead of producing an archive that cannot build.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
REPO_ONLY = (
    "the ringbroker Python package is built from the ringbroker repository only "
    "(it compiles the Rust library in ../../ffi and includes ../../include/ringbroker.h): "
    "run `pip install ./bindings/python` from a checkout of the repository"
)


def check_repository() -> None:
    """Fails with an explanation unless this folder sits in a ringbroker checkout."""
    for needed in ("include/ringbroker.h", "ffi/Cargo.toml", "Cargo.toml"):
        if not (REPO / needed).is_file():
            sys.exit(f"error: {REPO / needed} is missing: {REPO_ONLY}")


def workspace_version() -> str:
    """The workspace's version (Cargo.toml, [workspace.package]): the package's too."""
    text = (REPO / "Cargo.toml").read_text()
    section = text.split("[workspace.package]", 1)[-1]
    match = re.search(r'^version\s*=\s*"([^"]+)"', section, re.MULTILINE)
    if not match:
        sys.exit(f"error: no version in {REPO / 'Cargo.toml'} [workspace.package]")
    return match.group(1)


def cargo_build() -> Path:
    """Builds libringbroker.a in release mode and returns its path."""
    cargo = os.environ.get("CARGO") or shutil.which("cargo")
    if not cargo:
        sys.exit("error: cargo is not on PATH: building the ringbroker package needs Rust")
    command = [cargo, "build", "--release", "-p", "ringbroker-ffi"]
    print("running", " ".join(command), "in", REPO, flush=True)
    done = subprocess.run(command, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"error: `{' '.join(command)}` failed with status {done.returncode}")
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    library = target / "release" / "libringbroker.a"
    if not library.is_file():
        sys.exit(f"error: cargo succeeded but {library} is missing")
    return library


class BuildExt(build_ext):
    """build_ext that builds the Rust library and generates the cffi module first."""

    def run(self) -> None:
        check_repository()
        library = cargo_build()
        sys.path.insert(0, str(HERE))
        try:
            import ringbroker_build
        finally:
            sys.path.remove(str(HERE))
        ffibuilder = ringbroker_build.make_builder(REPO, library)
        source_dir = Path(self.build_temp)
        source_dir.mkdir(parents=True, exist_ok=True)
        generated = ffibuilder.distutils_extension(tmpdir=str(source_dir))
        for ext in self.extensions:
            if ext.name == "ringbroker._native":
                for field in ("sources", "include_dirs", "libraries", "extra_objects",
                              "extra_compile_args", "extra_link_args", "define_macros"):
                    setattr(ext, field, getattr(generated, field))
                ext.depends = [str(library), str(REPO / "include" / "ringbroker.h"),
                               str(HERE / "native" / "rbpy.h"), str(HERE / "native" / "rbpy.c")]
        super().run()


class NoSdist(sdist):
    """An sdist cannot hold the Rust sources this package builds from: refuse."""

    def run(self) -> None:
        sys.exit(f"error: no sdist: {REPO_ONLY}")


setup(
    version=workspace_version() if (REPO / "Cargo.toml").is_file() else "0",
    ext_modules=[Extension("ringbroker._native", sources=[])],
    cmdclass={"build_ext": BuildExt, "sdist": NoSdist},
    zip_safe=False,
)
