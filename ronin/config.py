"""Settings, read once from the ``RONIN_*`` environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import platformdirs

from ronin.errors import InvalidValue

DEFAULT_FRESHNESS_WINDOW = timedelta(hours=24)
DEFAULT_POOL_MAX_SIZE = 10
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_STATEMENT_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything an operator can configure, with the defaults a newcomer gets."""

    database_url: str | None = None
    data_dir: Path = Path(platformdirs.user_data_dir("ronin"))
    freshness_window: timedelta = DEFAULT_FRESHNESS_WINDOW
    pool_max_size: int = DEFAULT_POOL_MAX_SIZE
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S

    @property
    def embedded(self) -> bool:
        """True when Ronin runs its own PostgreSQL rather than an operator's."""
        return self.database_url is None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (the process environment by default)."""
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            database_url=env.get("RONIN_DATABASE_URL") or None,
            data_dir=Path(env["RONIN_DATA_DIR"]).expanduser()
            if env.get("RONIN_DATA_DIR")
            else defaults.data_dir,
            freshness_window=timedelta(
                seconds=_number(env, "RONIN_FRESHNESS_WINDOW_S", defaults.freshness_window)
            ),
            pool_max_size=int(_number(env, "RONIN_POOL_MAX_SIZE", defaults.pool_max_size)),
            connect_timeout_s=_number(env, "RONIN_CONNECT_TIMEOUT_S", defaults.connect_timeout_s),
            statement_timeout_s=_number(
                env, "RONIN_STATEMENT_TIMEOUT_S", defaults.statement_timeout_s
            ),
        )


def _number(env: Mapping[str, str], name: str, default: float | timedelta) -> float:
    """A positive number from the environment, or the default; a clear error otherwise."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default.total_seconds() if isinstance(default, timedelta) else float(default)
    try:
        value = float(raw)
    except ValueError:
        raise InvalidValue(f"{name} must be a number, not {raw!r}", field=name) from None
    if not value > 0:
        raise InvalidValue(f"{name} must be greater than 0, not {raw!r}", field=name)
    return value
