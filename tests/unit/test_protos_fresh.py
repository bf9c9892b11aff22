"""The committed generated code matches protos/twin/v*/*.proto (regenerate with `make proto`)."""

from __future__ import annotations

from pathlib import Path

from tools.gen_protos import PROTO_DIRS, ROOT, generate


def test_every_wire_version_is_generated() -> None:
    assert {d.name for d in PROTO_DIRS} >= {"v1", "v2"}


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    protos = generate(tmp_path)
    assert {p.parent.name for p in protos} == {d.name for d in PROTO_DIRS}
    for version in PROTO_DIRS:
        out_dir = tmp_path / version.relative_to(ROOT)
        generated = sorted(out_dir.glob("*_pb2*.py*"))
        assert generated, f"nothing generated for {version.name}"
        for fresh in generated:
            committed = version / fresh.name
            assert committed.exists(), f"{committed} is missing: run `make proto`"
            assert committed.read_text() == fresh.read_text(), f"{committed} is stale: run `make proto`"


def test_importable_as_package() -> None:
    from protos.twin.v1 import twin_pb2, twin_pb2_grpc
    from protos.twin.v2 import twin_pb2 as v2
    from protos.twin.v2 import twin_pb2_grpc as v2_grpc

    assert twin_pb2.Batch(seq=3).seq == 3
    assert hasattr(twin_pb2_grpc, "CollectorStub")
    assert v2.Batch(seq=4, summaries=[v2.Summary(series=1)]).summaries[0].series == 1
    assert hasattr(v2_grpc, "CollectorStub")
