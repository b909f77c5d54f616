"""Process settings: where the config and the data live, where to listen. From env and CLI flags.

| setting  | flag       | environment          | default                                       |
|----------|------------|----------------------|-----------------------------------------------|
| config   | --config   | SWITCHBOARD_CONFIG   | config/gateway.yaml                           |
| data dir | --data-dir | SWITCHBOARD_DATA_DIR | $XDG_DATA_HOME/switchboard, else              |
|          |            |                      | ~/.local/share/switchboard                    |
| host     | --host     | SWITCHBOARD_HOST     | 127.0.0.1                                     |
| port     | --port     | SWITCHBOARD_PORT     | 8080                                          |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CONFIG = Path("config/gateway.yaml")
LEDGER_FILE = "ledger.sqlite3"
# Budget counters and rate windows with `state: embedded`.
BUDGET_FILE = "budget.sqlite3"


def default_data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "switchboard"


@dataclass(frozen=True, slots=True)
class Settings:
    config_path: Path
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080

    @property
    def ledger_path(self) -> Path:
        return self.data_dir / LEDGER_FILE

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        config_path: str | Path | None = None,
        data_dir: str | Path | None = None,
        host: str | None = None,
        port: int | None = None,
    ) -> Settings:
        """Flags win over the environment, which wins over the defaults."""
        env = os.environ if env is None else env
        raw_port = port if port is not None else env.get("SWITCHBOARD_PORT") or 8080
        try:
            port_number = int(raw_port)
        except ValueError:
            raise ValueError(f"SWITCHBOARD_PORT must be a port number, got {raw_port!r}") from None
        if not 1 <= port_number <= 65535:
            raise ValueError(f"the port must be between 1 and 65535, got {port_number}")
        return cls(
            config_path=Path(config_path or env.get("SWITCHBOARD_CONFIG") or DEFAULT_CONFIG),
            data_dir=Path(data_dir or env.get("SWITCHBOARD_DATA_DIR") or default_data_dir(env)),
            host=host or env.get("SWITCHBOARD_HOST") or "127.0.0.1",
            port=port_number,
        )
