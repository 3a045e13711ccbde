"""Generate the ``customs.gateway.v1`` Python package from the ``.proto`` files beside this script.

The generated modules (``*_pb2.py``, ``*_pb2_grpc.py`` and ``*.pyi`` stubs) land in ``customs/``
at the top of the checkout, a package of their own with absolute imports, never edited by hand and
never committed (``make gen`` rebuilds them whenever a ``.proto`` changes).

The only include path is this folder: the google protos the API imports are shipped in
``protos/google/`` (see its README for their source, version and licence). Their Python code is
not generated here; it comes from ``protobuf`` and ``googleapis-common-protos``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main() -> int:
    shutil.rmtree(ROOT / "customs", ignore_errors=True)
    protos = sorted(str(p.relative_to(HERE)) for p in (HERE / "customs").rglob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{HERE}",  # and nothing else: protos/ is self-contained
        f"--python_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        f"--pyi_out={ROOT}",
        *protos,
    ]
    code = protoc.main(args)
    if code != 0:
        print("protoc failed", file=sys.stderr)
        return int(code)
    for directory in {p.parent for p in (ROOT / "customs").rglob("*_pb2.py")}:
        d = directory
        while d != ROOT:
            (d / "__init__.py").touch()
            (d / "py.typed").touch()
            d = d.parent
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
