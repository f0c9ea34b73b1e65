"""Generates the Python modules of the simad.v1 protos (build time, or first import in a checkout).

Generated code is built, never committed (STYLE.md 10). ``protoc`` writes imports such as
``from simad.v1 import tensor_pb2``, which would resolve to the engine package ``simad``; they
are rewritten to relative imports so the modules live inside ``simad_client._proto``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "_proto"
STAMP = OUT / "_stamp.txt"
_IMPORT = re.compile(r"^from simad\.v1 import (\w+_pb2) as", re.M)


def proto_root() -> Path | None:
    """The directory holding ``simad/v1/*.proto``: bundled next to the package, or the repo's."""
    for cand in (HERE / "protos", HERE.parents[2] / "protos" if len(HERE.parents) > 2 else None):
        if cand is not None and (cand / "simad" / "v1").is_dir():
            return cand
    return None


def _sources(root: Path) -> list[Path]:
    return sorted((root / "simad" / "v1").glob("*.proto"))


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in _sources(root):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def up_to_date(root: Path | None = None) -> bool:
    root = root or proto_root()
    if root is None:  # an installed package: generated at build time, nothing to compare
        return (OUT / "tensor_pb2.py").exists()
    return STAMP.exists() and STAMP.read_text().strip() == _digest(root)


def generate(out: Path = OUT, root: Path | None = None) -> None:
    """Runs protoc (from grpcio-tools) on every simad.v1 proto into ``out``."""
    import grpc_tools
    from grpc_tools import protoc  # build-time dependency only

    root = root or proto_root()
    if root is None:
        raise RuntimeError("simad protos not found (expected protos/simad/v1 in the checkout)")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".gen-"))  # concurrent generators do not collide
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = ["protoc", f"-I{root}", f"-I{include}", f"--python_out={tmp}", f"--grpc_python_out={tmp}"]
    args += [str(p) for p in _sources(root)]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on " + " ".join(args[5:]))
    for p in sorted((tmp / "simad" / "v1").glob("*.py")):
        p.write_text(_IMPORT.sub(r"from . import \1 as", p.read_text()))
        os.replace(p, out / p.name)  # atomic: a concurrent importer sees old or new, never half
    shutil.rmtree(tmp, ignore_errors=True)
    (out / "__init__.py").touch()
    stamp = out / STAMP.name
    stamp.with_suffix(".tmp").write_text(_digest(root) + "\n")
    os.replace(stamp.with_suffix(".tmp"), stamp)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
