"""``protos/`` compiles with nothing but itself, and the google protos shipped in it are the
copies its README names (source, version, licence, SHA-256)."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

PROTOS = Path(__file__).resolve().parents[1] / "protos"


def test_every_proto_compiles_with_protos_as_the_only_include_path(tmp_path: Path) -> None:
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    out = tmp_path / "all.binpb"
    # protoc.main adds no include path of its own (grpc_tools' __main__ would add its _proto).
    code = protoc.main(
        ["protoc", f"-I{PROTOS}", "--include_imports", f"--descriptor_set_out={out}", *files]
    )
    assert code == 0
    names = {f.name for f in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file}
    assert {"google/rpc/status.proto", "google/rpc/error_details.proto"} <= names
    assert "customs/gateway/v1/peer.proto" in names


def test_without_the_shipped_google_protos_it_does_not_compile(tmp_path: Path) -> None:
    """The check above can fail: peer.proto alone, without protos/google, is an error."""
    alone = tmp_path / "protos"
    (alone / "customs").mkdir(parents=True)
    for p in (PROTOS / "customs").rglob("*.proto"):
        target = alone / p.relative_to(PROTOS)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(p.read_bytes())
    code = protoc.main(
        ["protoc", f"-I{alone}", f"--descriptor_set_out={tmp_path / 'x'}",
         "customs/gateway/v1/peer.proto"]
    )  # fmt: skip
    assert code != 0


def test_shipped_google_protos_match_their_recorded_sums_and_carry_a_licence() -> None:
    readme = (PROTOS / "google" / "README.md").read_text()
    recorded = {
        name: digest for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.M)
    }
    shipped = {
        str(p.relative_to(PROTOS)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (PROTOS / "google").rglob("*.proto")
    }
    assert recorded == shipped
    assert "Apache License" in (PROTOS / "google" / "rpc" / "LICENSE").read_text()
    assert "Redistribution and use" in (PROTOS / "google" / "protobuf" / "LICENSE").read_text()


def test_every_distribution_the_code_imports_is_a_direct_dependency() -> None:
    """``google.rpc`` (``googleapis-common-protos``) is imported by the gateway itself, so it is
    declared, not left to arrive through ``grpcio-status``."""

    project = tomllib.loads((PROTOS.parent / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~\[ ]", d, maxsplit=1)[0] for d in project["dependencies"]}
    imports = {
        "google.rpc": "googleapis-common-protos",
        "google.protobuf": "protobuf",
        "grpc_status": "grpcio-status",
        "grpc_health": "grpcio-health-checking",
        "grpc_reflection": "grpcio-reflection",
        "cryptography": "cryptography",
        "sqlite_utils": "sqlite-utils",
    }
    source = "\n".join(p.read_text() for p in (PROTOS.parent / "gateway").rglob("*.py"))
    used = {
        dist
        for module, dist in imports.items()
        if re.search(rf"^\s*(from|import) {re.escape(module)}\b", source, re.M)
    }
    assert "googleapis-common-protos" in used
    assert used <= declared, used - declared
