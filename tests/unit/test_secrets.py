from __future__ import annotations

from pathlib import Path

import pytest

from runtime.errors import ConfigError
from runtime.secrets import read_secret


def test_file_then_env_then_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "token"
    f.write_text("from-file\n")
    monkeypatch.setenv("TWIN_TEST_SECRET", " from-env ")
    assert read_secret("uplink.token", file=str(f), env="TWIN_TEST_SECRET", inline="x") == "from-file"
    assert read_secret("uplink.token", env="TWIN_TEST_SECRET", inline="x") == "from-env"
    assert read_secret("uplink.token", inline="inline") == "inline"
    assert read_secret("uplink.token") == ""


def test_errors_name_the_key_and_never_the_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"^influx\.token_file: cannot read /nonexistent/t"):
        read_secret("influx.token", file="/nonexistent/t")
    monkeypatch.setenv("TWIN_TEST_EMPTY", "  ")
    with pytest.raises(ConfigError, match=r"^webhooks\[0\]\.secret_env: environment variable TWIN_TEST_EMPTY is not"):
        read_secret("webhooks[0].secret", env="TWIN_TEST_EMPTY")
    monkeypatch.delenv("TWIN_TEST_UNSET", raising=False)
    with pytest.raises(ConfigError, match="TWIN_TEST_UNSET is not set"):
        read_secret("sources[1].password", env="TWIN_TEST_UNSET")
