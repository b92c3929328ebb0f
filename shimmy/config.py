"""Settings, from lowest to highest precedence: defaults < config file < SHIMMY_* env < flags.

The config file is TOML at ``<user config dir>/config.toml`` (or the file named
by ``SHIMMY_CONFIG``); its keys are the field names of :class:`Settings`.
Folders come from platformdirs and can be moved with ``SHIMMY_HOME``, which
tests use to keep every run in its own temporary folder.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import platformdirs

from shimmy.errors import ShimmyError

APP_NAME = "shimmy"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11435
DEFAULT_OLLAMA_PORT = 11434  # Ollama's own, where its clients look first


@dataclass(frozen=True)
class Paths:
    """Where shimmy keeps its own files."""

    config_dir: Path
    data_dir: Path
    cache_dir: Path
    log_dir: Path

    @property
    def models_dir(self) -> Path:
        """Shimmy's own models folder, where downloads go (discovery source 3)."""
        return self.data_dir / "models"

    @property
    def config_file(self) -> Path:
        override = os.environ.get("SHIMMY_CONFIG")
        return Path(override) if override else self.config_dir / "config.toml"

    @classmethod
    def from_env(cls) -> Paths:
        home = os.environ.get("SHIMMY_HOME")
        if home:
            root = Path(home)
            return cls(root / "config", root / "data", root / "cache", root / "log")
        return cls(
            Path(platformdirs.user_config_dir(APP_NAME)),
            Path(platformdirs.user_data_dir(APP_NAME)),
            Path(platformdirs.user_cache_dir(APP_NAME)),
            Path(platformdirs.user_log_dir(APP_NAME)),
        )


def default_threads() -> int:
    """All physical cores: llama-cpp-python's own default (half the logical cores)
    halves generation speed on small machines."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:  # psutil can fail inside odd containers; fall back below
        physical = None
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    count = physical or available or os.cpu_count() or 1
    if available:
        count = min(count, available)
    return max(1, count)


@dataclass(frozen=True)
class Settings:
    """Everything a shimmy process can be told."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    # Ollama's API on a second listener: "HOST:PORT", "on" (127.0.0.1:11434) or "" (off).
    ollama: str = ""
    model: str | None = None  # default model: a registry name or a path
    model_dirs: tuple[str, ...] = ()
    keep_alive: float = 300.0  # seconds a model stays loaded after its last use
    threads: int = field(default_factory=default_threads)
    ctx_size: int = 4096  # context tokens per request slot (capped at the trained length)
    parallel: int = 4  # request slots per loaded model, decoded together
    batch_size: int = 512
    cache_ram: int = 1024  # MiB per model for prompts whose slot was taken (0: off)
    # n-gram speculative decoding (shimmy/models/speculation.py): off until the
    # benchmark shows it pays on the machines shimmy runs on (bench/RESULTS.md)
    spec: bool = False
    # Where layers and the KV cache live (shimmy/models/offload.py checks them).
    # "auto" offloads what fits in free GPU memory, none on a CPU-only build.
    gpu_layers: str = "auto"  # "auto", "all" or a count of layers
    flash_attn: str = "auto"  # "on", "off" or "auto"
    cache_type_k: str = "f16"  # f16, q8_0, q4_0, ... (q8_0 halves the KV memory)
    cache_type_v: str = "f16"
    main_gpu: int = 0
    tensor_split: tuple[str, ...] = ()  # each GPU's share, like ("3", "1")
    rpc: tuple[str, ...] = ()  # llama.cpp RPC workers, "HOST:PORT" (`shimmy worker`)
    # Memory for loaded models (shimmy/models/memory.py): a size like "8GB", or ""
    # for the RAM available less a headroom. Idle models are unloaded, least
    # recently used first, to make room; max_loaded_models caps the count (0: none).
    memory_limit: str = ""
    max_loaded_models: int = 0
    # Generations waiting per model before server_busy. A waiting request holds
    # only its prompt's tokens (at most a slot's context: ~20 MB for 256 waiting
    # 2,048-token prompts) and gives up at request_timeout, so the line can be as
    # long as a busy team needs (32 clients on 8 slots wait 24 deep); Ollama's
    # default is 512, llama-server's is unbounded.
    max_queue: int = 256
    max_tokens_limit: int = 4096  # largest max_tokens a request may ask for
    max_body_bytes: int = 1_000_000
    request_timeout: float = 600.0  # wall-clock seconds one generation may take
    max_ws_connections: int = 32  # open /ws/generate connections at once
    ws_idle_timeout: float = 300.0  # seconds a WebSocket may stay silent between requests
    header_timeout: float = 10.0  # seconds a connection has to send a request's headers
    api_keys: tuple[str, ...] = ()  # with keys, every endpoint but /api/health needs one
    cors_origins: tuple[str, ...] = ()  # CORS is off unless origins are named
    insecure: bool = False  # allow a non-loopback bind without an API key
    preload: bool = True  # load the default model in the background at start
    chats_db: str | None = None  # the chats database (default: chats.db in the data folder)
    verbose: bool = False

    def with_overrides(self, **values: Any) -> Settings:
        """A copy with the given fields replaced; ``None`` values are ignored."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


def chats_path(settings: Settings, paths: Paths | None = None) -> Path:
    """The chats database: the ``chats_db`` setting (``SHIMMY_CHATS_DB``), else
    ``chats.db`` in shimmy's data folder."""
    if settings.chats_db:
        return Path(settings.chats_db).expanduser()
    return (paths or Paths.from_env()).data_dir / "chats.db"


_ENV_PREFIX = "SHIMMY_"


def _coerce(name: str, raw: Any, default: Any) -> Any:
    """Turn a config-file or environment value into the field's type."""
    try:
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in {"1", "true", "yes", "on"}
        if isinstance(default, tuple):
            if isinstance(raw, str):
                # Paths split like PATH; keys and origins (which hold ':') on commas.
                sep = os.pathsep if name == "model_dirs" else ","
                return tuple(p.strip() for p in raw.split(sep) if p.strip())
            return tuple(str(p) for p in raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ShimmyError(
            "invalid_request", f"Bad value for setting '{name}'", f"{raw!r}: {exc}"
        ) from exc


def load_settings(paths: Paths | None = None, **flags: Any) -> Settings:
    """Build the settings of this process from every source, in precedence order."""
    paths = paths or Paths.from_env()
    base = Settings()
    values: dict[str, Any] = {}
    defaults = {f.name: getattr(base, f.name) for f in fields(Settings)}

    config_file = paths.config_file
    if config_file.is_file():
        try:
            data = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ShimmyError(
                "invalid_request", f"Cannot read config file {config_file}", str(exc)
            ) from exc
        for key, raw in data.items():
            name = key.replace("-", "_")
            if name not in defaults:
                raise ShimmyError("invalid_request", f"Unknown setting '{key}' in {config_file}")
            values[name] = _coerce(name, raw, defaults[name])

    for name, default in defaults.items():
        raw = os.environ.get(_ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = _coerce(name, raw, default)
    # SHIMMY_MODEL_PATHS (DESIGN.md) adds places to search, like --model-dirs.
    extra = os.environ.get("SHIMMY_MODEL_PATHS")
    if extra:
        values["model_dirs"] = tuple(values.get("model_dirs", ())) + tuple(
            p for p in extra.split(os.pathsep) if p
        )

    # SHIMMY_API_KEY (one key) is the usual spelling; SHIMMY_API_KEYS takes several.
    single_key = os.environ.get("SHIMMY_API_KEY")
    if single_key:
        values["api_keys"] = tuple(values.get("api_keys", ())) + (single_key,)

    settings = replace(base, **values)
    for name in ("model_dirs", "api_keys", "cors_origins"):
        if flags.get(name):  # flags add to what the file and environment gave
            flags[name] = tuple(getattr(settings, name)) + tuple(flags[name])
    return settings.with_overrides(**flags)
