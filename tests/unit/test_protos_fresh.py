"""The committed generated code matches protos/twin/v1/*.proto (regenerate with `make proto`)."""

from __future__ import annotations

from pathlib import Path

from tools.gen_protos import PROTO_DIR, generate


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    protos = generate(tmp_path)
    assert protos, "no .proto files found"
    out_dir = tmp_path / "protos" / "twin" / "v1"
    generated = sorted(out_dir.glob("*_pb2*.py*"))
    assert generated
    for fresh in generated:
        committed = PROTO_DIR / fresh.name
        assert committed.exists(), f"{committed} is missing: run `make proto`"
        assert committed.read_text() == fresh.read_text(), f"{committed.name} is stale: run `make proto`"


def test_importable_as_package() -> None:
    from protos.twin.v1 import twin_pb2, twin_pb2_grpc

    assert twin_pb2.Batch(seq=3).seq == 3
    assert hasattr(twin_pb2_grpc, "CollectorStub")
