"""Prompts kept in host memory after their slot went to another request.

A context has only ``parallel`` slots. When more conversations are going on
than that (chat clients, agents with long system prompts, the bench's second
turn beside eight streams), a new request must take a slot that holds another
conversation, and that conversation's next turn would have to decode all of its
tokens again, evicting yet another slot. As llama.cpp's server does with
``--cache-ram``, the engine copies the slot's KV state into this cache first
(a few tens of kilobytes a token for small models) and copies it back into a
slot when a prompt continues it: a memory copy instead of a prompt decode.

Entries are looked up by the longest prefix they share with a prompt and
dropped least recently used first when the cache is over its size in bytes.

Most conversations never come back: a server of one-shot requests (a script,
an autocomplete, an eval) would fill the cache with states nobody asks for, a
megabyte or more each, and its memory would grow towards the limit as if it
leaked (llama-server's does, towards its 8 GiB). So a conversation that has not
shown it continues is kept only on trial: the newest ``trial_entries`` such
states are kept (one per slot, enough for the next turn of each conversation
that just lost its slot), older ones go. A conversation that did come back (a
request continued it: a second turn, or a long prefix such as an agent's system
prompt that several requests share) is kept until the byte limit.
Each entry belongs to a cache scope (one per API key, see
``GenerationRequest.cache_scope``) and only serves prompts of the same scope:
a restored prompt shows in ``cached_tokens`` and in the time to the first
token, which would tell one client how much of another's prompt it guessed.
Only the engine's scheduler thread touches a cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MIN_TOKENS = 32  # fewer tokens lost from a slot are not worth saving
MIN_GAIN = 8  # restoring (a memory copy) beats decoding from this many tokens on


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def continues_a_conversation(reused: int, prompt: int) -> bool:
    """Whether a prompt of ``prompt`` tokens whose first ``reused`` were already
    decoded (in its slot, or restored from here) continues a conversation: the
    reused part is long and most of the prompt. A short shared head (a template's
    default system prompt) does not count."""
    return reused >= MIN_TOKENS and 2 * reused >= prompt


@dataclass
class SavedPrompt:
    tokens: list[int]  # the tokens whose KV state ``data`` holds, from position 0
    data: Any  # the state of one sequence (a ctypes byte array)
    scope: str = ""  # the cache scope of the request that left these tokens
    proven: bool = False  # the conversation came back once already (see above)

    @property
    def size(self) -> int:
        return len(self.data)


class PromptCache:
    """Saved sequence states, newest last, at most ``limit_bytes`` together."""

    def __init__(self, limit_bytes: int, trial_entries: int = 4) -> None:
        self.limit_bytes = limit_bytes
        self.trial_entries = trial_entries
        self._entries: list[SavedPrompt] = []
        self.size_bytes = 0  # read by other threads (the stats), so kept as a number
        self.hits = 0  # prompts restored from here instead of decoded again

    def __len__(self) -> int:
        return len(self._entries)

    def wants(self, tokens: Sequence[int], keep: int, *, scope: str = "") -> bool:
        """Whether a slot holding ``tokens`` of ``scope``, about to keep only the
        first ``keep`` of them, is worth saving first."""
        if self.limit_bytes <= 0 or len(tokens) - keep < MIN_TOKENS:
            return False
        # Already here in full (or as part of a longer saved prompt): nothing new.
        return not any(
            e.scope == scope and common_prefix(e.tokens, tokens) == len(tokens)
            for e in self._entries
        )

    def add(
        self, tokens: Sequence[int], data: Any, *, scope: str = "", proven: bool = False
    ) -> None:
        """Keep ``data``, the state of a sequence holding ``tokens`` of ``scope``;
        ``proven`` when the request that left it continued a conversation."""
        saved = SavedPrompt(list(tokens), data, scope, proven)
        if saved.size > self.limit_bytes:
            return
        # An earlier, shorter state of the same conversation is now redundant.
        shorter = [
            e
            for e in self._entries
            if e.scope == scope and common_prefix(e.tokens, tokens) == len(e.tokens)
        ]
        for entry in shorter:
            saved.proven = saved.proven or entry.proven
            self._remove(entry)
        self._entries.append(saved)
        self.size_bytes += saved.size
        on_trial = [e for e in self._entries if not e.proven]
        for entry in on_trial[: max(0, len(on_trial) - self.trial_entries)]:
            self._remove(entry)
        while self.size_bytes > self.limit_bytes:
            self._remove(self._entries[0])

    def take(
        self, prompt: Sequence[int], better_than: int, *, scope: str = ""
    ) -> SavedPrompt | None:
        """Remove and return the saved prompt of ``scope`` that shares the longest
        prefix with ``prompt``, if it shares more than ``better_than`` tokens (what
        the slot already holds) by at least :data:`MIN_GAIN`."""
        best: SavedPrompt | None = None
        best_shared = better_than + MIN_GAIN - 1
        for entry in self._entries:
            if entry.scope != scope:
                continue
            shared = common_prefix(entry.tokens, prompt)
            if shared > best_shared:
                best, best_shared = entry, shared
        if best is not None:
            self._remove(best)
            self.hits += 1
        return best

    def _remove(self, entry: SavedPrompt) -> None:
        self._entries.remove(entry)
        self.size_bytes -= entry.size
