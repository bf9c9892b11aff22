"""Regenerate protos/twin/v*/*_pb2*.py from the .proto files (run: `make proto`).

The generated modules are committed so that installing the package needs no code generator;
tests/unit/test_protos_fresh.py fails when they are stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos" / "twin"
PROTO_DIRS = tuple(sorted(p for p in PROTO_ROOT.glob("v*") if p.is_dir()))  # one per wire version
PROTO_DIR = PROTO_ROOT / "v1"


def generate(out_root: Path) -> list[Path]:
    """Compile every .proto under protos/twin/v* into out_root (mirroring the package path)."""
    from grpc_tools import protoc  # dev dependency only

    protos = sorted(p for d in PROTO_DIRS for p in d.glob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(p.relative_to(ROOT)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return protos


if __name__ == "__main__":
    generate(ROOT)
    print(f"generated into {', '.join(str(d) for d in PROTO_DIRS)}", file=sys.stderr)
