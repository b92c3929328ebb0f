"""Settings, from lowest to highest precedence: defaults < config file < SHIMMY_* env < flags.

The config file is TOML at ``<user config dir>/config.toml`` (or the file named
by ``SHIMMY_CONFIG``); its keys are the field names of :class:`Settings`.
Folders come from platformdirs and can be moved with ``SHIMMY_HOME``, which
tests use to keep every run in its own temporary folder.
"""

from __future__ import annotations

import math
import os
import re
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


# [models.NAME] tables: the server settings a preset may change for its model,
# each within these bounds (None: checked later, by the models layer's offload.py).
PRESET_ENGINE_BOUNDS: dict[str, tuple[type, float, float] | None] = {
    "ctx_size": (int, 0, 1 << 20),
    "parallel": (int, 1, 256),
    "threads": (int, 1, 1024),
    "batch_size": (int, 1, 1 << 16),
    "cache_ram": (int, 0, 1 << 20),
    "spec": (bool, 0, 1),
    "draft_min": (int, 0, 64),
    "gpu_layers": None,
    "flash_attn": None,
    "cache_type_k": None,
    "cache_type_v": None,
    "main_gpu": (int, 0, 15),
}
# Sampling defaults a preset may set, with the native API's bounds.
PRESET_SAMPLING_BOUNDS: dict[str, tuple[type, float, float]] = {
    "temperature": (float, 0.0, 2.0),
    "top_p": (float, 0.0, 1.0),
    "top_k": (int, 0, 1 << 20),
    "min_p": (float, 0.0, 1.0),
    "repeat_penalty": (float, 0.0, 10.0),
    "presence_penalty": (float, -2.0, 2.0),
    "frequency_penalty": (float, -2.0, 2.0),
    "seed": (int, 0, (1 << 32) - 1),
    "repeat_last_n": (int, -1, 1 << 20),
}
MAX_PRESETS = 256
MAX_SYSTEM_PROMPT = 64 * 1024  # characters
PRESET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class ModelPreset:
    """A ``[models.NAME]`` table of the config file: a model under its own name,
    with the settings it loads with and the defaults its requests get."""

    name: str
    model: str  # a discovered name, a file path, or hf.co/ORG/REPO[:QUANT]
    engine: tuple[tuple[str, Any], ...] = ()  # Settings fields, for this model only
    sampling: tuple[tuple[str, float | int], ...] = ()  # SamplingParams defaults
    system: str | None = None  # a system prompt, when a conversation has none
    description: str | None = None


def parse_presets(table: Any, source: Path | str) -> tuple[ModelPreset, ...]:
    """The ``[models.NAME]`` tables, checked; ``invalid_request`` names the table
    and the key that is wrong and says what is accepted."""
    if not isinstance(table, dict):
        raise ShimmyError("invalid_request", f"'models' in {source} must hold [models.NAME] tables")
    if len(table) > MAX_PRESETS:
        raise ShimmyError("invalid_request", f"{source} names more than {MAX_PRESETS} models")
    presets = []
    for raw_name, values in table.items():
        name = str(raw_name).strip().lower()
        where = f"[models.{str(raw_name)[:100]}] in {source}"
        if not PRESET_NAME.match(name) or name == "default":
            raise ShimmyError(
                "invalid_request",
                f"Bad model name {where}",
                "letters, digits, '.', '_' and '-', at most 100, not 'default'",
            )
        if not isinstance(values, dict):
            raise ShimmyError("invalid_request", f"{where} must be a table")
        presets.append(_preset(name, values, where))
    return tuple(presets)


def _preset(name: str, values: dict[str, Any], where: str) -> ModelPreset:
    model = values.get("model")
    if not isinstance(model, str) or not model.strip() or len(model) > 4096:
        raise ShimmyError(
            "invalid_request",
            f'{where} needs model = "NAME"',
            "a name from `shimmy list`, a GGUF file's path, or hf.co/ORG/REPO:QUANT",
        )
    engine: list[tuple[str, Any]] = []
    sampling: list[tuple[str, float | int]] = []
    texts: dict[str, str | None] = {"system": None, "description": None}
    for key, raw in values.items():
        if key == "model":
            continue
        if key in texts:
            if not isinstance(raw, str) or len(raw) > MAX_SYSTEM_PROMPT:
                raise ShimmyError(
                    "invalid_request",
                    f"Bad {key} {where}",
                    f"a string of at most {MAX_SYSTEM_PROMPT} characters",
                )
            texts[key] = raw
        elif key in PRESET_SAMPLING_BOUNDS:
            sampling.append((key, _bounded(key, raw, PRESET_SAMPLING_BOUNDS[key], where)))
        elif key in PRESET_ENGINE_BOUNDS:
            bounds = PRESET_ENGINE_BOUNDS[key]
            if bounds is None:
                if not isinstance(raw, str | int) or isinstance(raw, bool):
                    raise ShimmyError("invalid_request", f"Bad {key} {where}", "a string")
                engine.append((key, str(raw)[:100]))
            else:
                engine.append((key, _bounded(key, raw, bounds, where)))
        else:
            known = ["model", "system", "description", *PRESET_ENGINE_BOUNDS]
            raise ShimmyError(
                "invalid_request",
                f"Unknown key '{str(key)[:100]}' {where}",
                "known keys: " + ", ".join([*known, *PRESET_SAMPLING_BOUNDS]),
            )
    return ModelPreset(
        name,
        model.strip(),
        tuple(engine),
        tuple(sampling),
        texts["system"],
        texts["description"],
    )


def _bounded(key: str, raw: Any, bounds: tuple[type, float, float], where: str) -> Any:
    kind, low, high = bounds
    if kind is bool:
        if not isinstance(raw, bool):
            raise ShimmyError("invalid_request", f"Bad {key} {where}", "true or false")
        return raw
    ok = isinstance(raw, int | float) and not isinstance(raw, bool)
    if ok and kind is int:
        ok = isinstance(raw, int)
    if not ok or not math.isfinite(raw) or not low <= raw <= high:
        what = "a whole number" if kind is int else "a number"
        raise ShimmyError(
            "invalid_request", f"Bad {key} {where}", f"{what} from {low:g} to {high:g}"
        )
    return kind(raw)


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
    # n-gram speculative decoding (shimmy/models/speculation.py). It pays where
    # replies repeat their prompt (bench/RESULTS.md: 1.30x, no loss on chat) but
    # stays off by default: drafts change the batch shapes llama.cpp computes a
    # token in, and its CPU kernels round differently by shape, so the same
    # greedy request could give another text the next time.
    spec: bool = False
    # With --spec on, a slot that has a draft drafts at least this many tokens of
    # it, whatever its measured costs say (llama-server's --draft-min; 0: as they say).
    draft_min: int = 0
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
    # [models.NAME] tables of the config file (config file only: no flag, no variable)
    presets: tuple[ModelPreset, ...] = ()
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
        if "models" in data:
            values["presets"] = parse_presets(data.pop("models"), config_file)
        for key, raw in data.items():
            name = key.replace("-", "_")
            if name not in defaults or name == "presets":
                raise ShimmyError("invalid_request", f"Unknown setting '{key}' in {config_file}")
            values[name] = _coerce(name, raw, defaults[name])

    for name, default in defaults.items():
        if name == "presets":
            continue
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
