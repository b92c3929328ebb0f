"""The hub over HTTP, within bounds.

Its address and offline switch come from the environment (``HF_ENDPOINT``,
``HF_HUB_OFFLINE``) at each call, not when huggingface_hub is imported, so tests
and long-running processes see changes. huggingface_hub's errors become
ShimmyErrors a user can act on; a GET follows only a few redirects, to http(s)
addresses, and sends the token to the hub alone; listings are read with bounds
on their size, pages and entries.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

from shimmy.errors import ShimmyError
from shimmy.models.hub.checks import check_url, download_failed, shown

DEFAULT_ENDPOINT = "https://huggingface.co"

# Bounds on what a hub answer may make shimmy read. The real hub sends tree
# pages of at most 1000 entries (~300 kB) and search pages of `limit` items.
MAX_ANSWER_BYTES = 16 * 1024**2  # one JSON page of a listing
MAX_ERROR_BYTES = 64 * 1024  # the body of an error answer, for its message
MAX_PAGES = 50  # pages of one listing
MAX_REDIRECTS = 5


def hub_endpoint() -> str:
    """The hub's base URL, from ``HF_ENDPOINT`` now."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    """Whether the hub is switched off (``HF_HUB_OFFLINE``), from the environment now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def ensure_online(endpoint: str) -> None:
    """Fail fast when offline: huggingface_hub's listing calls retry a refused
    connection for about 20 seconds before giving up."""
    if hub_offline():
        raise download_failed(
            "The Hugging Face Hub is switched off (HF_HUB_OFFLINE is set)",
            "unset HF_HUB_OFFLINE to search and download; local models still work",
        )
    import httpx2
    from huggingface_hub.utils import get_session

    if urlsplit(endpoint).scheme.lower() not in ("http", "https"):
        raise download_failed(f"HF_ENDPOINT is not an http(s) URL: {shown(endpoint)}")
    try:
        get_session().head(endpoint + "/", timeout=10)
    except httpx2.TransportError as exc:
        raise download_failed(
            f"Cannot reach the Hugging Face Hub at {endpoint}", f"{type(exc).__name__}: {exc}"
        ) from exc


@contextlib.contextmanager
def hub_errors(repo_id: str | None = None) -> Iterator[None]:
    """huggingface_hub's exceptions as ShimmyErrors with a message a user can act on."""
    import httpx2
    from huggingface_hub import errors

    try:
        yield
    except errors.GatedRepoError as exc:
        raise download_failed(
            f"Repository '{repo_id}' is gated",
            "accept its terms on huggingface.co and log in with `hf auth login`",
        ) from exc
    except errors.RepositoryNotFoundError as exc:
        raise ShimmyError(
            "model_not_found",
            f"Repository '{repo_id}' was not found on the Hugging Face Hub",
            "check the name with `shimmy search`; private repos need `hf auth login`",
        ) from exc
    except errors.RevisionNotFoundError as exc:
        raise ShimmyError("model_not_found", f"Revision not found in '{repo_id}'") from exc
    except errors.EntryNotFoundError as exc:
        raise ShimmyError("model_not_found", f"File not found in '{repo_id}'", str(exc)) from exc
    except errors.OfflineModeIsEnabled as exc:
        raise download_failed("The Hugging Face Hub is switched off (HF_HUB_OFFLINE)") from exc
    except errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise download_failed(f"The Hugging Face Hub answered HTTP {status}", str(exc)) from exc
    except httpx2.TransportError as exc:
        raise download_failed(
            f"Cannot reach the Hugging Face Hub at {hub_endpoint()}",
            f"{type(exc).__name__}: {exc}",
        ) from exc


def _auth_headers(url: str, endpoint: str) -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    headers = dict(build_hf_headers())
    if urlsplit(url)[:2] != urlsplit(endpoint)[:2]:
        headers.pop("authorization", None)  # a CDN's signed URL needs no token
        headers.pop("Authorization", None)
    headers["Accept-Encoding"] = "identity"  # sizes are the bytes' sizes; no zip bombs
    return headers


def _read_capped(response: Any, limit: int, what: str) -> bytes:
    """The body of ``response``, refused once it passes ``limit`` bytes."""
    body = bytearray()
    for chunk in response.iter_bytes(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise download_failed(
                f"The hub's answer for {what} is larger than {limit:,} bytes", str(response.url)
            )
    return bytes(body)


def _raise_for_status(response: Any) -> None:
    """huggingface_hub's errors for an error answer, read from its first
    MAX_ERROR_BYTES only (hf_raise_for_status would read all of it)."""
    import httpx2
    from huggingface_hub.utils import hf_raise_for_status

    if 200 <= response.status_code < 300:
        return
    body = bytearray()
    for chunk in response.iter_bytes(MAX_ERROR_BYTES):
        body += chunk
        if len(body) >= MAX_ERROR_BYTES:
            break
    headers = [
        (k, v)
        for k, v in response.headers.multi_items()
        if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")
    ]
    read = httpx2.Response(
        response.status_code,
        headers=headers,
        content=bytes(body[:MAX_ERROR_BYTES]),
        request=response.request,
    )
    hf_raise_for_status(read)
    raise download_failed(f"The Hugging Face Hub answered HTTP {response.status_code}")


@contextlib.contextmanager
def streamed_get(
    url: str, *, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> Iterator[Any]:
    """A streamed GET of ``url``: redirects followed (at most MAX_REDIRECTS, to
    http(s) URLs only, the token sent only to the hub itself), error answers
    raised as huggingface_hub raises them."""
    from huggingface_hub.utils import get_session

    endpoint = hub_endpoint()
    for _ in range(MAX_REDIRECTS + 1):
        check_url(url, "a download address")
        sent = {**_auth_headers(url, endpoint), **(headers or {})}
        with get_session().stream(
            "GET", url, params=params, headers=sent, follow_redirects=False, timeout=30
        ) as response:
            if not response.has_redirect_location:
                _raise_for_status(response)
                yield response
                return
            location = response.headers["Location"]
            url = urljoin(str(response.url), location)
            params = None  # the new address carries its own query
            check_url(url, "a redirect")
    raise download_failed(f"The hub redirected more than {MAX_REDIRECTS} times", url)


def hub_list(url: str, params: dict[str, Any], what: str, *, wanted: int) -> list[Any]:
    """The items of a paginated JSON listing (the hub's ``Link: rel="next"``
    pages), at most ``wanted``; each page, the page count and the item count
    bounded, and every next page on the hub's own origin."""
    items: list[Any] = []
    origin = urlsplit(hub_endpoint())[:2]
    for _ in range(MAX_PAGES):
        with streamed_get(url, params=params) as response:
            body = _read_capped(response, MAX_ANSWER_BYTES, what)
            next_url = response.links.get("next", {}).get("url")
            here = str(response.url)
        try:
            page = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise download_failed(f"The hub's answer for {what} is not JSON", here) from exc
        if not isinstance(page, list):
            raise download_failed(f"The hub's answer for {what} is not a list", here)
        items.extend(page)
        if len(items) >= wanted or not next_url:
            return items[:wanted]
        url, params = urljoin(here, next_url), {}
        if urlsplit(url)[:2] != origin:
            raise download_failed(f"The hub's next page of {what} is on another site", shown(url))
    raise download_failed(f"The hub's listing of {what} has more than {MAX_PAGES} pages")
