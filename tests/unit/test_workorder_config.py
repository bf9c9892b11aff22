"""The commented [api] and [[webhooks]] examples of the example config are valid; config errors name the key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from collector.api import ApiSettings
from collector.config import build_collector_config
from collector.itsm import WebhookSettings, load_webhooks
from runtime.errors import ConfigError
from runtime.tomlconfig import parse_model

ROOT = Path(__file__).resolve().parents[2]


def commented_tables() -> dict[str, object]:
    """Uncomment the `# [api]` / `# [[webhooks]]` blocks of the example config."""
    text = (ROOT / "configs" / "collector.example.toml").read_text()
    start = text.index("# [api]")
    lines = [re.sub(r"^# ?", "", ln) for ln in text[start:].splitlines()
             if re.match(r"^# (\[|[a-z_]+ = )", ln)]
    return tomllib.loads("\n".join(lines))


def test_commented_examples_validate() -> None:
    data = commented_tables()
    api = parse_model(ApiSettings, data["api"], "api")
    assert (api.host, api.port) == ("127.0.0.1", 8080)
    hooks = [parse_model(WebhookSettings, w, f"webhooks[{i}]") for i, w in enumerate(data["webhooks"])]
    assert [h.format for h in hooks] == ["generic", "generic", "servicenow"]
    # field work by default; the collector's own incidents only where listed
    assert [h.categories for h in hooks] == [["corrective", "preventive", "data_quality"], ["collector"],
                                             ["corrective", "preventive"]]


BASE = {"agents": [{"id": "gw-1", "token_sha256": "a" * 64}]}


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"api": {"listen": "8080"}}, "api.listen: must be host:port"),
        ({"api": {"token_file": "/nonexistent/api.token"}}, "api.token_file: cannot read"),
        ({"api": {"token_env": "TWIN_TEST_UNSET_VARIABLE"}}, "api.token_env: environment variable"),
        ({"webhooks": [{"name": "ops", "url": "ftp://x"}]}, "webhooks[0].url"),
        ({"webhooks": [{"name": "ops", "url": "http://x", "auth": "basic"}]}, "webhooks[0]: auth = \"basic\""),
        ({"webhooks": [{"name": "ops", "url": "http://x", "secret_file": "/nonexistent/s"}]},
         "webhooks[0].secret_file: cannot read"),
        ({"webhooks": [{"name": "ops", "url": "http://x", "format": "jira"}]}, "webhooks[0].format"),
        ({"webhooks": [{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}]},
         "webhooks[1].name: duplicate"),
        ({"history": {"retention_days": 0}}, "history.retention_days"),
        ({"rules": [{"name": "p", "kind": "trend", "asset_type": "pump", "point": "x", "above": 1,
                     "horizon_days": 0}]}, "rules[0].horizon_days"),
    ],
)
def test_collector_config_errors_name_the_key(patch: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_collector_config(BASE | patch)
    assert key in str(err.value)


def test_secrets_are_read_and_not_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "secret").write_text("s3cret-value\n")
    monkeypatch.setenv("TWIN_TEST_TOKEN", "bearer-value")
    (hook,) = load_webhooks([WebhookSettings(name="ops", url="http://127.0.0.1:1/x", auth="bearer",
                                             token_env="TWIN_TEST_TOKEN", secret_file=str(tmp_path / "secret"))])
    assert hook.secret == b"s3cret-value" and hook.authorization == "Bearer bearer-value"
    assert "s3cret" not in repr(hook) and "bearer-value" not in repr(hook)
    cfg = build_collector_config(BASE | {"api": {"token_env": "TWIN_TEST_TOKEN"}})
    assert cfg.api_token == "bearer-value" and "bearer-value" not in repr(cfg)
