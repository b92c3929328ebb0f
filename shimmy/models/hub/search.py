"""Search the hub for GGUF repositories, best first by downloads, likes or date."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shimmy.errors import ShimmyError
from shimmy.models.hub.checks import (
    check_repo_id,
    checked_count,
    checked_date,
    download_failed,
    shown,
)
from shimmy.models.hub.client import ensure_online, hub_endpoint, hub_errors, hub_list

SORTS: dict[str, str] = {"downloads": "downloads", "likes": "likes", "updated": "lastModified"}
MAX_SEARCH_RESULTS = 1000  # the hub's own page limit


@dataclass(frozen=True)
class HubModel:
    """One GGUF repository found by :func:`search_models`."""

    repo_id: str
    downloads: int | None
    likes: int | None
    last_modified: datetime | None
    parameters: int | None  # from the hub's GGUF or safetensors summary, where known

    def to_json(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "downloads": self.downloads,
            "likes": self.likes,
            "last_modified": self.last_modified.isoformat() if self.last_modified else None,
            "parameters": self.parameters,
        }


def _parameters(item: dict[str, Any]) -> int | None:
    for summary in (item.get("gguf"), item.get("safetensors")):
        if isinstance(summary, dict) and checked_count(summary.get("total")) is not None:
            return checked_count(summary["total"])
    return None


def _hub_model(item: object) -> HubModel:
    """One search result, its name checked and its numbers bounded."""
    if not isinstance(item, dict):
        raise download_failed(f"The hub sent a search result that is not an object: {shown(item)}")
    repo_id = check_repo_id(item.get("id"), "download_failed")
    return HubModel(
        repo_id,
        checked_count(item.get("downloads")),
        checked_count(item.get("likes")),
        checked_date(item.get("lastModified")),
        _parameters(item),
    )


def search_models(query: str, *, limit: int = 20, sort: str = "downloads") -> list[HubModel]:
    """GGUF repositories matching ``query``, best first by ``sort``
    (one of :data:`SORTS`: downloads, likes, updated); at most ``limit``
    (1 to :data:`MAX_SEARCH_RESULTS`)."""
    if sort not in SORTS:
        raise ShimmyError("invalid_request", f"Unknown sort '{sort}'", f"use {', '.join(SORTS)}")
    if not 1 <= limit <= MAX_SEARCH_RESULTS:
        raise ShimmyError("invalid_request", f"The limit must be 1 to {MAX_SEARCH_RESULTS}")
    endpoint = hub_endpoint()
    ensure_online(endpoint)
    params = {
        "filter": "gguf",
        "sort": SORTS[sort],
        "limit": limit,
        "expand": ["downloads", "likes", "lastModified", "gguf", "safetensors"],
    }
    if query:
        params["search"] = query
    with hub_errors():
        items = hub_list(endpoint + "/api/models", params, "the search", wanted=limit)
    return [_hub_model(item) for item in items]
