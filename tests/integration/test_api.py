"""The HTTP API of a real collector process, with a real HTTP client: assets, twin, work orders
(filters, show, acknowledge, close), health, what-if, bearer token on changes, OpenAPI coverage;
and `twin-collector work-orders show` printing the captured context."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import urllib3

from collector.api import build_app, openapi_document
from collector.config import hash_token
from collector.fleet import FleetTwin
from protos.twin.v1 import twin_pb2
from tests.integration.daemons import FILTER_RULE, TOKENS, collector_process
from tests.integration.test_collector_auth import exchange
from tests.integration.test_workorders_lifecycle import hello, summary
from tests.servers import free_port, wait_for

API_TOKEN = "api-token-0123456789abcdef"
ALICE_TOKEN = "alice-token-0123456789abcdef"
BOB_TOKEN = "bob-token-0123456789abcdef"
S = 10**9


def request(http: urllib3.PoolManager, method: str, url: str, body: Any = None,
            token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    resp = http.request(method, url, body=json.dumps(body).encode() if body is not None else None,
                        headers=headers, timeout=30.0)
    return resp.status, json.loads(resp.data) if resp.data else None


def test_api_round_trips(tmp_path: Path) -> None:
    api_port = free_port()
    (tmp_path / "api.token").write_text(API_TOKEN + "\n")
    extra = (f'\n[api]\nlisten = "127.0.0.1:{api_port}"\ntoken_file = "{tmp_path / "api.token"}"\n'
             f'[api.users]\nalice = "{hash_token(ALICE_TOKEN)}"\nbob = "{hash_token(BOB_TOKEN)}"\n'
             "[history]\nsummary_resolution_s = 0\n")  # keep every 10 s summary for the what-if
    collector = collector_process(tmp_path / "c", rules=FILTER_RULE + extra)
    base = f"http://127.0.0.1:{api_port}"
    http = urllib3.PoolManager(retries=False)
    try:
        t0 = time.time_ns() - 600 * S
        batches = [twin_pb2.Batch(seq=i + 1, summaries=[summary("ahu-1", "filter_dp", t0 + i * 10 * S, v)],
                                  asset_states=[twin_pb2.AssetState(asset="ahu-1", state="degraded", health=60,
                                                                    ts_ns=t0 + i * 10 * S)])
                   for i, v in enumerate([280, 310, 320, 330, 340, 350, 450.12345678])]
        acks = asyncio.run(exchange(collector.port, TOKENS["gw-a"], hello(), batches))
        assert acks[-1] == len(batches)
        wait_for(lambda: request(http, "GET", f"{base}/health")[0] == 200, 20, "the API")

        status, health = request(http, "GET", f"{base}/health")
        assert health["status"] == "ok" and health["work_orders"] == {"open": 1}
        assert [a["id"] for a in health["agents"]] == ["gw-a"] and health["ingest"]["per_agent"]["gw-a"]["batches"] == 7

        status, assets = request(http, "GET", f"{base}/assets")
        assert status == 200 and [a["id"] for a in assets] == ["ahu-1", "chiller-1", "pump-1", "zone-3"]
        assert assets[0]["open_work_orders"] == 1 and assets[0]["state"] == "degraded"
        status, twin = request(http, "GET", f"{base}/assets/ahu-1")
        assert status == 200 and twin["points"]["filter_dp"]["last"] == 450.123, "6 significant digits"
        assert twin["depends_on"][0]["asset"] == "chiller-1" and twin["dependents"][0]["asset"] == "zone-3"
        assert [w["rule"] for w in twin["open_work_orders"]] == ["filter_clogged"]
        assert request(http, "GET", f"{base}/assets/nope")[0] == 404

        status, orders = request(http, "GET", f"{base}/work-orders?status=active&asset=ahu-1")
        assert status == 200 and len(orders) == 1 and "context" not in orders[0]
        ref = orders[0]["ref"]
        assert orders[0]["severity"] == "critical", "escalated past 420"
        assert request(http, "GET", f"{base}/work-orders?severity=urgent")[0] == 400
        assert request(http, "GET", f"{base}/work-orders?limit=0")[0] == 400
        assert request(http, "GET", f"{base}/work-orders?category=preventive")[1] == []
        status, wo = request(http, "GET", f"{base}/work-orders/{ref}")
        assert status == 200 and [e["action"] for e in wo["events"]] == ["raised", "escalated"]
        assert wo["context"]["trend"]["series"] == "point:filter_dp:mean"
        assert request(http, "GET", f"{base}/work-orders/abc")[0] == 400
        assert request(http, "GET", f"{base}/work-orders/WO-009999")[0] == 404

        # Unknown paths and methods answer JSON like every other error.
        status, err = request(http, "GET", f"{base}/no-such-thing")
        assert status == 404 and "no such path: /no-such-thing" in err["error"]
        resp = http.request("DELETE", f"{base}/work-orders", timeout=30.0)
        assert resp.status == 405 and "GET" in resp.headers["Allow"], resp.status
        assert "DELETE is not allowed" in json.loads(resp.data)["error"]

        ack = f"{base}/work-orders/{ref}/acknowledge"
        assert request(http, "POST", ack, {"by": "alice"})[0] == 401
        assert request(http, "POST", ack, {"by": "alice"}, token="wrong-token-000000000")[0] == 401
        assert request(http, "POST", ack, {"note": "no name"}, token=API_TOKEN)[0] == 400, "shared token: say who"
        # A person's token records that person; a body claiming someone else is refused.
        status, err = request(http, "POST", ack, {"by": "alice", "note": "not me"}, token=BOB_TOKEN)
        assert status == 400 and "bob's" in err["error"]
        status, done = request(http, "POST", ack, {"note": "on my way"}, token=BOB_TOKEN)
        assert status == 200 and done["status"] == "acknowledged" and done["acknowledged_by"] == "bob"
        assert request(http, "POST", ack, {}, token=ALICE_TOKEN)[0] == 409
        close = f"{base}/work-orders/{ref}/close"
        status, done = request(http, "POST", close, {"note": "filter replaced"}, token=ALICE_TOKEN)
        assert status == 200 and done["status"] == "closed" and done["note"] == "filter replaced"
        assert done["closed_by"] == "alice" and done["acknowledged_by"] == "bob"
        assert request(http, "POST", close, {"by": "ops-robot"}, token=API_TOKEN)[0] == 409

        # what-if: a lower limit raises earlier; a new rule adds a work order; both without the token refused
        proposed = {"since": "1d", "rules": [
            {"name": "filter_clogged", "asset_type": "ahu", "point": "filter_dp", "field": "mean", "above": 270.0,
             "clear_at": 250.0, "min_duration_s": 4, "severity": "major"},
            {"name": "filter_rising", "kind": "rate_of_change", "asset_type": "ahu", "point": "filter_dp",
             "rise_per_h": 100.0, "window_s": 60, "min_points": 3}]}
        assert request(http, "POST", f"{base}/what-if", proposed)[0] == 401
        assert request(http, "POST", f"{base}/what-if", {"rules": [{"name": "x", "kind": "trend"}]},
                       token=API_TOKEN)[0] == 400
        status, report = request(http, "POST", f"{base}/what-if", proposed, token=API_TOKEN)
        assert status == 200, report
        assert report["summary"]["current"] == 1 and len(report["recorded"]) == 1
        assert [w["proposed"]["rule"] for w in report["earlier"]] == ["filter_clogged"]
        assert [w["rule"] for w in report["added"]] == ["filter_rising"]
        status, report = request(http, "POST", f"{base}/what-if", {"rules_toml": "[[rules]]\nname = 'x'\n"},
                                 token=API_TOKEN)
        assert status == 400 and "rules[0]" in report["error"]
        # A change to one rule: only the keys it changes; the rule keeps the rest of its table.
        status, report = request(http, "POST", f"{base}/what-if", {"since": "1d", "rules": [
            {"name": "filter_clogged", "above": 270.0}]}, token=ALICE_TOKEN)
        assert status == 200 and [w["proposed"]["rule"] for w in report["earlier"]] == ["filter_clogged"]
        assert report["added"] == [] and report["removed"] == []
        status, report = request(http, "POST", f"{base}/what-if", {"rules": [{"name": "filter_clogged"}],
                                                                   "replace_all": True}, token=ALICE_TOKEN)
        assert status == 400 and report["error"].startswith("rules[0].")

        status, doc = request(http, "GET", f"{base}/openapi.json")
        assert status == 200 and doc["openapi"].startswith("3.")

        proc = subprocess.run([sys.executable, "-m", "collector", "work-orders", "--config",
                               str(collector.config_path), "show", ref],  # type: ignore[attr-defined]
                              capture_output=True, text=True, check=True, timeout=60)
        assert "trend of filter_dp (mean)" in proc.stdout, proc.stdout
        assert "point:filter_dp" not in proc.stdout, "internal series keys are not for people"
        assert "depends on chiller-1" in proc.stdout and "needed by zone-3" in proc.stdout
        assert "closed by alice" in proc.stdout and "acknowledged by bob" in proc.stdout
    finally:
        http.clear()
        collector.stop()


def test_openapi_document_covers_every_route(tmp_path: Path) -> None:
    app = build_app(FleetTwin(tmp_path / "unused.sqlite"))
    routes = {(r.method.lower(), r.resource.canonical) for r in app.router.routes() if r.resource is not None
              and r.method != "HEAD"}
    doc = openapi_document()
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented
