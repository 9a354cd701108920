"""Builds distillery_client, generating the distill.v1 stubs from ../proto.

The stubs (distillery_client/_proto/teacher_pb2{,_grpc}.py) are never checked
in: they are generated here, at build time, from the repository's
proto/distill/v1/teacher.proto (the wire contract), with /usr/bin/protoc and
grpc_python_plugin (Debian's protobuf-compiler and protobuf-compiler-grpc)
or, failing that, python3 -m grpc_tools.protoc (python3-grpc-tools).
$DISTILLERY_PROTO_DIR names another proto root (one holding
distill/v1/teacher.proto), e.g. to build from a copy of this directory.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

_HERE = Path(__file__).resolve().parent
_PROTO_FILE = Path("distill") / "v1" / "teacher.proto"


def _proto_root() -> Path:
    root = Path(os.environ.get("DISTILLERY_PROTO_DIR", _HERE.parent / "proto"))
    if not (root / _PROTO_FILE).is_file():
        raise SystemExit(f"distillery_client: {root / _PROTO_FILE} not found: build from the "
                         "repository's python/ directory, or set DISTILLERY_PROTO_DIR to the "
                         "directory holding distill/v1/teacher.proto")
    return root


def _generators(root: Path):
    """(name, command prefix) of each code generator available, best first."""
    found = []
    protoc, plugin = shutil.which("protoc"), shutil.which("grpc_python_plugin")
    if protoc and plugin:
        found.append((f"{protoc} + {plugin}",
                      [protoc, f"-I{root}", f"--plugin=protoc-gen-grpc_python={plugin}"]))
    try:
        import grpc_tools  # noqa: F401
        includes = [f"-I{root}"]
        well_known = Path(grpc_tools.__file__).parent / "_proto"
        if well_known.is_dir():
            includes.append(f"-I{well_known}")
        found.append(("grpc_tools.protoc", [sys.executable, "-m", "grpc_tools.protoc", *includes]))
    except ImportError:
        pass
    return found


def generate_stubs(out_dir: Path) -> None:
    """Writes teacher_pb2.py and teacher_pb2_grpc.py into out_dir."""
    root = _proto_root()
    errors = []
    for name, prefix in _generators(root):
        with tempfile.TemporaryDirectory() as tmp:
            result = subprocess.run(
                [*prefix, f"--python_out={tmp}", f"--grpc_python_out={tmp}",
                 str(root / _PROTO_FILE)], capture_output=True, text=True)
            if result.returncode != 0:
                errors.append(f"{name}: exit {result.returncode}: {result.stderr.strip()}")
                continue
            generated = Path(tmp) / "distill" / "v1"
            out_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(generated / "teacher_pb2.py", out_dir / "teacher_pb2.py")
            grpc_code = (generated / "teacher_pb2_grpc.py").read_text()
            # The plugin imports the messages as a top-level `distill` package;
            # here they live next to the stubs.
            grpc_code = grpc_code.replace("from distill.v1 import teacher_pb2 as",
                                          "from . import teacher_pb2 as")
            (out_dir / "teacher_pb2_grpc.py").write_text(grpc_code)
            return
    if not errors:
        errors.append("no generator found: install protobuf-compiler and "
                      "protobuf-compiler-grpc (or python3-grpc-tools)")
    raise SystemExit("distillery_client: cannot generate the distill.v1 stubs:\n  "
                     + "\n  ".join(errors))


class BuildPyWithStubs(build_py):
    def run(self):
        super().run()
        generate_stubs(Path(self.build_lib) / "distillery_client" / "_proto")


if __name__ == "__main__" and len(sys.argv) >= 3 and sys.argv[1] == "generate":
    # python3 setup.py generate DIR: the stubs alone (for tests and benches
    # that run the package from the source tree).
    generate_stubs(Path(sys.argv[2]))
else:
    setup(cmdclass={"build_py": BuildPyWithStubs})
