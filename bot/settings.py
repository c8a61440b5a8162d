"""Every setting the bot reads, typed, from the environment (and .env) in one place."""
from __future__ import annotations

import os
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from dotenv import load_dotenv

from model.generator import GeneratorConfig

ROOT = Path(__file__).resolve().parent.parent


def shipped_model() -> Path:
    """The checkout's models/default; an installed package carries a copy as data files (pyproject),
    which pip puts under its scheme's data folder (sys.prefix in a venv, /usr/local for a system
    Python on Debian)."""
    checkout = ROOT / "models" / "default"
    installed = Path(sysconfig.get_path("data")) / "share" / "quill" / "models" / "default"
    return checkout if checkout.is_dir() else installed


class SettingsError(ValueError):
    pass


# A tale's link adds its path (under 50 characters) to the public address; Discord takes links of at most 512.
PUBLIC_URL_MOST = 400


def _shard_range(part: str) -> range:
    """"3" or "0-3" (inclusive)."""
    low, _, high = part.strip().partition("-")
    low = int(low)
    high = int(high) if high else low
    if low < 0 or high < low:
        raise ValueError(part)
    return range(low, high + 1)


@dataclass(frozen=True)
class Settings:
    discord_token: str | None = None
    dev_guild_id: int | None = None
    database: str = "quill.db"  # a SQLite file, or a postgresql:// URL for bots of several processes
    model: Path = shipped_model()
    queue_size: int = GeneratorConfig.queue_size  # the generator's own defaults, not copies
    max_batch: int = GeneratorConfig.max_batch
    story_timeout: float = GeneratorConfig.timeout
    log_level: str = "INFO"
    engine: str = GeneratorConfig.engine
    search_width: int = GeneratorConfig.search_width  # most candidates per sentence (1: no sentence search)
    shard_count: int | None = None  # None: as Discord recommends, all in this process
    shard_ids: tuple[int, ...] | None = None  # the shards this process runs; None: all of them
    metrics_port: int | None = None  # /metrics and /healthz; None: not served
    metrics_host: str = "127.0.0.1"  # where they listen: this machine only, unless the operator says otherwise
    discord_api: str | None = None  # Discord's REST API through a rate-limit proxy; None: Discord's own
    web_port: int | None = None  # the web gallery (bot/web.py), served by this process; None: not served
    web_host: str = "127.0.0.1"  # where it listens: behind the operator's reverse proxy on this machine
    # Where members find the web gallery, for its links; None: this process's own port, on this
    # machine, or no links without one. A process may link to the gallery another one serves: they
    # share the database.
    public_url: str | None = None

    def __post_init__(self):
        if self.public_url is None and self.web_port:
            object.__setattr__(self, "public_url", f"http://127.0.0.1:{self.web_port}")

    @classmethod
    def from_env(cls, env=None, dotenv: bool = True) -> "Settings":
        if dotenv:
            load_dotenv()
        env = os.environ if env is None else env

        def number(name: str, kind, default):
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = kind(raw)
            except ValueError:
                what = "whole number" if kind is int else "number"
                raise SettingsError(f"{name} must be a {what} (got {raw!r})") from None
            if value <= 0:
                raise SettingsError(f"{name} must be positive (got {raw!r})")
            return value

        def choice(name: str, allowed: tuple[str, ...], default: str) -> str:
            raw = env.get(name, "").strip().lower() or default
            if raw not in allowed:
                raise SettingsError(f"{name} must be one of {', '.join(allowed)} (got {raw!r})")
            return raw

        def port(name: str) -> int | None:
            value = number(name, int, None)
            if value is not None and value > 65535:
                raise SettingsError(f"{name} must be a port number, 1 to 65535 (got {value})")
            return value

        def public_url() -> str | None:
            raw = env.get("QUILL_PUBLIC_URL", "").strip().rstrip("/")
            if not raw:
                return None
            if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", raw):
                raise SettingsError(f"QUILL_PUBLIC_URL must be an http:// or https:// address with no query, "
                                    f"such as https://tales.example.org (got {raw!r})")
            if len(raw) > PUBLIC_URL_MOST:
                raise SettingsError(f"QUILL_PUBLIC_URL must be at most {PUBLIC_URL_MOST} characters: Discord "
                                    f"takes links of at most 512 (got {len(raw)})")
            return raw

        def shards() -> tuple[int, ...] | None:
            raw = env.get("QUILL_SHARDS", "").strip()
            if not raw:
                return None
            if shard_count is None:
                raise SettingsError("QUILL_SHARDS needs QUILL_SHARD_COUNT (how many shards the whole bot has)")
            try:
                ids = sorted({i for part in raw.split(",") for i in _shard_range(part)})
            except ValueError:
                raise SettingsError(f"QUILL_SHARDS must be shard numbers such as 0,1 or 0-3 (got {raw!r})") from None
            if not ids or ids[-1] >= shard_count:
                raise SettingsError(f"QUILL_SHARDS must be numbers from 0 to {shard_count - 1} "
                                    f"(QUILL_SHARD_COUNT is {shard_count}; got {raw!r})")
            return tuple(ids)

        d = cls()
        shard_count = number("QUILL_SHARD_COUNT", int, None)
        return cls(
            discord_token=env.get("DISCORD_TOKEN", "").strip() or None,
            dev_guild_id=number("DEV_GUILD_ID", int, None),
            database=env.get("QUILL_DATABASE", "").strip() or d.database,
            model=Path(env.get("QUILL_MODEL", "").strip() or d.model),
            queue_size=number("QUILL_QUEUE_SIZE", int, d.queue_size),
            max_batch=number("QUILL_MAX_BATCH", int, d.max_batch),
            story_timeout=number("QUILL_STORY_TIMEOUT", float, d.story_timeout),
            log_level=env.get("QUILL_LOG_LEVEL", "").strip().upper() or d.log_level,
            engine=choice("QUILL_ENGINE", ("auto", "cpu", "device"), d.engine),
            search_width=number("QUILL_SEARCH_WIDTH", int, d.search_width),
            shard_count=shard_count,
            shard_ids=shards(),
            metrics_port=port("QUILL_METRICS_PORT"),
            metrics_host=env.get("QUILL_METRICS_HOST", "").strip() or d.metrics_host,
            discord_api=env.get("QUILL_DISCORD_API", "").strip().rstrip("/") or None,
            web_port=port("QUILL_WEB_PORT"),
            web_host=env.get("QUILL_WEB_HOST", "").strip() or d.web_host,
            public_url=public_url(),
        )

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(model=self.model, max_batch=self.max_batch, queue_size=self.queue_size,
                               timeout=self.story_timeout, engine=self.engine, search_width=self.search_width)
