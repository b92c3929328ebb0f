"""Turning a stream of token bytes into safe text pieces.

Two problems sit between llama.cpp's tokens and a client: a multi-byte UTF-8
character can be split across tokens, and a stop string can span several
tokens. :class:`TextStream` solves both: it emits only complete characters, and
holds back any tail that could still grow into a stop string until that is
decided, so a stop string never leaks into the output.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextStream:
    """Incremental UTF-8 decoding with stop-string detection.

    Feed token bytes with :meth:`feed`; each call returns the text that is now
    safe to emit. When a stop string is found, :attr:`stopped` becomes true and
    the text before it is the last thing emitted. :meth:`flush` returns what is
    held back once generation ends for another reason.
    """

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = [s for s in dict.fromkeys(stop) if s]
        self._held = ""
        self.stopped = False
        self.stop_string: str | None = None

    def feed(self, data: bytes) -> str:
        if self.stopped:
            return ""
        self._held += self._decoder.decode(data, final=False)
        if not self._stops:
            text, self._held = self._held, ""
            return text
        cut = self._earliest_stop()
        if cut is not None:
            index, stop = cut
            self.stopped = True
            self.stop_string = stop
            text, self._held = self._held[:index], ""
            return text
        keep = self._undecided_tail()
        split = len(self._held) - keep
        text, self._held = self._held[:split], self._held[split:]
        return text

    def flush(self) -> str:
        """Everything still held back (a partial stop string, an unfinished character)."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text

    def _earliest_stop(self) -> tuple[int, str] | None:
        best: tuple[int, str] | None = None
        for stop in self._stops:
            index = self._held.find(stop)
            if index != -1 and (best is None or index < best[0]):
                best = (index, stop)
        return best

    def _undecided_tail(self) -> int:
        """Length of the longest suffix of the held text that begins some stop string."""
        longest = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(self._held)), longest, -1):
                if self._held.endswith(stop[:length]):
                    longest = length
                    break
        return longest
