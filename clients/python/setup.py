"""Build hooks: generate the simad.v1 modules and bundle the protos into the package.

The contract lives in the repository's ``protos/`` (two levels up); an sdist carries a copy in
``simad_client/protos`` so a wheel can be built from it too. Generated code is never committed.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
CANDIDATES = (HERE.parent.parent / "protos", HERE / "simad_client" / "protos")


def proto_root() -> Path:
    for root in CANDIDATES:
        if (root / "simad" / "v1").is_dir():
            return root
    raise RuntimeError("simad protos not found: expected protos/simad/v1 two levels above setup.py")


def copy_protos(dest: Path) -> None:
    src = proto_root() / "simad" / "v1"
    out = dest / "simad" / "v1"
    out.mkdir(parents=True, exist_ok=True)
    for proto in sorted(src.glob("*.proto")):
        shutil.copy2(proto, out / proto.name)


def load_protogen():
    """simad_client/_protogen.py loaded alone (importing the package would need its _proto)."""
    spec = importlib.util.spec_from_file_location("_simad_protogen", HERE / "simad_client" / "_protogen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPy(build_py):
    """build_py, then protoc into <build_lib>/simad_client/_proto and the protos alongside."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable checkout generates on first import (simad_client.proto)
        pkg = Path(self.build_lib) / "simad_client"
        root = proto_root()
        stale = pkg / "_proto"
        if stale.exists():
            shutil.rmtree(stale)
        load_protogen().generate(out=pkg / "_proto", root=root)
        copy_protos(pkg / "protos")


class Sdist(sdist):
    """sdist with the protos copied in, so a wheel builds from it without the repository."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        copy_protos(Path(base_dir) / "simad_client" / "protos")


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})
