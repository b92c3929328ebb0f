"""The settings a command runs with: the config file and environment, then its flags.

Every flag is read with getattr(..., None): a command's parser lacks the flags
it does not take, and a shared flag is absent when not given (parser.py).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from shimmy.config import Settings, load_settings
from shimmy.models.memory import check_memory_settings
from shimmy.models.offload import Offload

if TYPE_CHECKING:
    from shimmy.models.manager import ModelManager


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings with ``args`` over them; bad API keys or CORS origins are refused."""
    from shimmy.api.browser import check_cors_origins
    from shimmy.api.security import check_keys

    settings = load_settings(
        model=getattr(args, "model", None),
        model_dirs=tuple(getattr(args, "model_dirs", None) or ()) or None,
        threads=getattr(args, "threads", None),
        ctx_size=getattr(args, "ctx_size", None),
        parallel=getattr(args, "parallel", None),
        api_keys=_api_keys(args) or None,
        cors_origins=tuple(getattr(args, "cors_origin", None) or ()) or None,
        insecure=getattr(args, "insecure", False) or None,
        request_timeout=getattr(args, "request_timeout", None),
        batch_size=getattr(args, "batch_size", None),
        cache_ram=getattr(args, "cache_ram", None),
        spec=None if getattr(args, "spec", None) is None else args.spec == "on",
        draft_min=getattr(args, "draft_min", None),
        keep_alive=getattr(args, "keep_alive", None),
        gpu_layers=getattr(args, "gpu_layers", None),
        flash_attn=getattr(args, "flash_attn", None),
        cache_type_k=getattr(args, "cache_type_k", None),
        cache_type_v=getattr(args, "cache_type_v", None),
        main_gpu=getattr(args, "main_gpu", None),
        tensor_split=_listed(getattr(args, "tensor_split", None)),
        rpc=_listed(getattr(args, "rpc", None)),
        memory_limit=getattr(args, "memory_limit", None),
        max_loaded_models=getattr(args, "max_loaded_models", None),
        ollama=getattr(args, "ollama", None),
        verbose=args.verbose or None,
    )
    check_keys(settings.api_keys)
    check_cors_origins(settings.cors_origins)
    Offload.from_settings(settings)  # a bad GPU or cache flag is refused before anything starts
    check_memory_settings(settings)
    return settings


def _listed(raw: str | None) -> tuple[str, ...] | None:
    """A comma-separated flag as the tuple the setting holds (None: not given)."""
    return None if raw is None else tuple(p.strip() for p in raw.split(",") if p.strip())


def _api_keys(args: argparse.Namespace) -> tuple[str, ...]:
    from shimmy.api.security import read_key_file

    keys = tuple(getattr(args, "api_key", None) or ())
    if getattr(args, "api_key_file", None):
        keys += tuple(read_key_file(args.api_key_file))
    return keys


def open_manager(settings: Settings) -> ModelManager:
    """The model manager a command works through (imported only when one does)."""
    from shimmy.models.manager import ModelManager

    return ModelManager(settings)
