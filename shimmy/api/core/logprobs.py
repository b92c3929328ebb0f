"""A generation's token log-probabilities, handed out with the text they make.

The engine records one entry per generated token (:class:`TokenLogprob`), but
the text a client receives is released later than its tokens (a possible stop
string or an unfinished UTF-8 character is held back) and may end before the
last token (a stop string is cut off). So entries are handed out as the text
they make is released: a token's entry goes with the chunk that completes its
bytes, and tokens past the end of the released text are never shown.
"""

from __future__ import annotations

from collections.abc import Callable

from shimmy.models.generation import Generation, TokenLogprob

Fits = Callable[[int, int], bool]  # (start, end) bytes of a token -> hand it out?


class LogprobCursor:
    """Hands out ``generation``'s entries in step with the text released."""

    def __init__(self, generation: Generation) -> None:
        self._generation = generation
        self._given = 0  # entries handed out
        self._covered = 0  # bytes of text those entries make

    def released(self, text_bytes: int) -> list[TokenLogprob]:
        """Entries of the tokens wholly within the first ``text_bytes`` bytes of text."""
        return self._take(lambda start, end: end <= text_bytes)

    def rest(self, text_bytes: int) -> list[TokenLogprob]:
        """At the end: the entries of tokens that begin within the text's
        ``text_bytes`` bytes (a token cut by a stop string included)."""
        return self._take(lambda start, end: start < text_bytes)

    def _take(self, fits: Fits) -> list[TokenLogprob]:
        entries = self._generation.logprobs
        taken: list[TokenLogprob] = []
        while self._given < len(entries):
            entry = entries[self._given]
            start, end = self._covered, self._covered + len(entry.piece)
            if not fits(start, end):
                break
            taken.append(entry)
            self._given += 1
            self._covered = end
        return taken
