"""Hugging Face Hub: search GGUF repositories, list their model files, pick a
quantization, check disk and memory, and download into the Hugging Face cache.

The front ends (``shimmy search``, ``pull`` and ``rm``; the dashboard's Hub tab)
use the names exported here; the rest stays in the modules, one part of the
work each:

    client.py     the hub over HTTP, within bounds (HF_ENDPOINT, HF_HUB_OFFLINE)
    checks.py     every answer is untrusted: names, hashes, counts and paths checked
    search.py     GGUF repositories matching a query
    files.py      a repository's GGUF files, their quantization, whether one fits
    pull.py       what a pull means: the spec, the file chosen, the disk checked
    transfer.py   the download: resumed, bounded, hashed, linked into the cache
    pulled.py     what shimmy pulled, for ``shimmy rm``, and the name it is listed under

Downloads land in the hub cache (``HF_HUB_CACHE`` / ``HF_HOME``), laid out as
``hf_hub_download`` lays it out (:mod:`shimmy.models.hf_cache`), so discovery
lists a pulled model at once and other tools find it too; shimmy fetches the
bytes itself, so that a stopped pull resumes and every file is hashed
(:mod:`~shimmy.models.hub.transfer`). Every hub answer is untrusted input (a
mirror in ``HF_ENDPOINT`` may be hostile): see :mod:`~shimmy.models.hub.checks`.
"""

from shimmy.models.hub.checks import repo_storage
from shimmy.models.hub.files import Fit, HubFile, HubPart, list_gguf_files, quantization_of
from shimmy.models.hub.pull import PullPlan, PullSpec, choose_file, parse_pull_spec, plan_pull
from shimmy.models.hub.pulled import (
    find_pulled,
    pulled_records,
    record_pull,
    registered_name,
    remove_pulled,
)
from shimmy.models.hub.search import SORTS, HubModel, search_models
from shimmy.models.hub.transfer import (
    PARTIAL_SUFFIX,
    DownloadCancelled,
    DownloadProgress,
    ProgressCallback,
    download,
    on_disk,
    partial_bytes,
)

__all__ = [
    "PARTIAL_SUFFIX",
    "SORTS",
    "DownloadCancelled",
    "DownloadProgress",
    "Fit",
    "HubFile",
    "HubModel",
    "HubPart",
    "ProgressCallback",
    "PullPlan",
    "PullSpec",
    "choose_file",
    "download",
    "find_pulled",
    "list_gguf_files",
    "on_disk",
    "parse_pull_spec",
    "partial_bytes",
    "plan_pull",
    "pulled_records",
    "quantization_of",
    "record_pull",
    "registered_name",
    "remove_pulled",
    "repo_storage",
    "search_models",
]
