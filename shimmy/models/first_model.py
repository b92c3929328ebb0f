"""What to say when shimmy finds no model: how to get one.

A fresh install (``pip install shimmy-llm``) has nothing to serve. Every empty
state (``shimmy list``, ``generate``, ``probe``, a server's first request, the
dashboard's Models and Chat tabs) says the same thing: pull a small instruct
model with ``shimmy pull`` (one that fits this machine's memory is named), or
search Hugging Face on the dashboard's Hub tab, or point shimmy at GGUF files
already here.
"""

from __future__ import annotations

from dataclasses import dataclass

# Small instruct models with GGUF files from their own makers, smallest first,
# with the size of the Q4_K_M file `shimmy pull` takes by default.
SUGGESTED_MODELS: tuple[tuple[str, int], ...] = (
    ("Qwen/Qwen2.5-0.5B-Instruct-GGUF", 491_000_000),
    ("Qwen/Qwen2.5-1.5B-Instruct-GGUF", 1_120_000_000),
    ("Qwen/Qwen2.5-3B-Instruct-GGUF", 2_100_000_000),
)
HUB_KEY = "F6"  # the dashboard's Hub tab


@dataclass(frozen=True)
class Suggestion:
    """A model to pull first, and whether it fits in this machine's memory now."""

    repo: str
    size: int
    fits: bool

    @property
    def command(self) -> str:
        return f"shimmy pull {self.repo}"


def suggest_model(available: int | None = None) -> Suggestion:
    """The largest suggested model that needs at most half the memory available
    (the machine keeps working beside it), else the smallest one."""
    from shimmy.models.memory import file_needs, system_memory

    room = system_memory().available if available is None else available
    chosen: Suggestion | None = None
    for repo, size in SUGGESTED_MODELS:
        if file_needs(size) <= room // 2:
            chosen = Suggestion(repo, size, True)
    if chosen is None:
        repo, size = SUGGESTED_MODELS[0]
        chosen = Suggestion(repo, size, False)
    return chosen


def how_to_get_a_model(*, in_dashboard: bool = False, available: int | None = None) -> str:
    """One paragraph: pull the suggested model, or use the Hub tab, or --model-dirs."""
    from shimmy.units import format_bytes

    pick = suggest_model(available)
    fits = "fits in this machine's memory" if pick.fits else "the smallest suggested"
    hub = (
        f"press {HUB_KEY} for the Hub tab to search Hugging Face and download one"
        if in_dashboard
        else f"search Hugging Face on the dashboard's Hub tab (`shimmy`, then {HUB_KEY})"
    )
    return (
        f"Get one with `{pick.command}` (a small instruct model, "
        f"{format_bytes(pick.size)}, {fits}), or {hub}; "
        "or point shimmy at GGUF files you have with --model-dirs"
    )
