"""`[state]`: where the collector keeps its state (fleet twin, watermarks, work orders, outbox, ...).

    [state]
    url = "postgresql://twin@db.example:5432/facility_twin"   # absent: state_dir/collector.sqlite
    password_file = "/etc/twin-collector/state.password"      # or password_env; never in the url
    pool_size = 10

Without `url` the state is the embedded SQLite file, for one collector. With a PostgreSQL url,
every collector that names the same database serves the same fleet (README: High availability).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from collector.state.database import PostgresLocation, StateLocation
from runtime.secrets import read_secret
from runtime.tomlconfig import StrictModel

__all__ = ["StateSettings"]


class StateSettings(StrictModel):
    url: str = ""
    password_file: str = ""
    password_env: str = ""
    pool_size: int = Field(default=10, ge=1, le=500)
    connect_timeout_s: float = Field(default=10.0, gt=0, le=300)
    statement_timeout_s: float = Field(default=60.0, gt=0, le=3600)

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, v: str) -> str:
        if not v:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL (leave it out for the embedded SQLite file)")
        if not parts.hostname or not parts.path.strip("/"):
            raise ValueError("must name a host and a database: postgresql://user@host:5432/database")
        if parts.password:
            raise ValueError("must not hold a password: put it in password_file or password_env")
        return v

    @model_validator(mode="after")
    def _password(self) -> StateSettings:
        if self.password_file and self.password_env:
            raise ValueError("give at most one of password_file or password_env")
        if (self.password_file or self.password_env) and not self.url:
            raise ValueError("password_file/password_env need url (the embedded SQLite file has no password)")
        return self

    def location(self, sqlite_path: Path) -> StateLocation:
        """The state database: PostgreSQL when `url` is set (its password read now), else `sqlite_path`."""
        if not self.url:
            return sqlite_path
        password = ""
        if self.password_file or self.password_env:
            password = read_secret("state.password", file=self.password_file, env=self.password_env)
        return PostgresLocation(self.url, password, self.pool_size, self.connect_timeout_s, self.statement_timeout_s)
