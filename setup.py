"""Build hook of the whole project: generate the simad.v1 modules into the built client package.

An editable install skips this: ``simad_client.proto`` generates them on first import from
``protos/`` (grpcio-tools is a dependency for that reason). Generated code is never committed.
"""

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPy(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        spec = importlib.util.spec_from_file_location("_simad_protogen", HERE / "clients/python/simad_client/_protogen.py")
        gen = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(gen)
        gen.generate(out=Path(self.build_lib) / "simad_client" / "_proto", root=HERE / "protos")


setup(cmdclass={"build_py": BuildPy})
