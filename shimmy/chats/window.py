"""What of a conversation is sent to the model: its context window policy.

The engine refuses a prompt longer than the model's context (it never cuts one),
so the chat decides before sending. Only complete turns are sent: a user message
whose reply failed, or that was refused itself, is left out of every later
prompt, so one failure never jams the conversation. When the turns and the new
message leave less room than a reply needs, the policy says what happens:
``drop_oldest`` leaves out the oldest turns (never the system prompt or the new
message) and says how many; ``stop`` sends nothing and says why. A message that
does not fit even alone is refused, with the numbers.

Sizes are measured with the model's own template and tokenizer, through the
``measure`` callable (the model manager's ``measure_chat``): (prompt tokens,
context tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shimmy.chats.store import StoredMessage

DROP_OLDEST = "drop_oldest"
STOP = "stop"
POLICIES = {DROP_OLDEST: "drop the oldest turns", STOP: "stop and say so"}

ChatTurn = dict[str, str]
Measure = Callable[[list[ChatTurn]], tuple[int, int]]


@dataclass(frozen=True)
class Window:
    """What to send (``messages``), or why nothing is sent (``refused``)."""

    messages: list[ChatTurn]
    dropped: int  # turns left out to fit
    prompt_tokens: int
    context: int
    refused: str | None = None

    @property
    def note(self) -> str | None:
        """What the chat says about this reply, if anything."""
        if self.refused or not self.dropped:
            return None
        turns = "turn" if self.dropped == 1 else "turns"
        return (
            f"the {self.dropped} oldest {turns} left out to fit the context "
            f"({self.prompt_tokens} of {self.context} tokens)"
        )


def context_turns(messages: Sequence[StoredMessage]) -> list[tuple[str, str]]:
    """The complete turns of a conversation, in order: a user message followed by
    the reply it got. Failed turns (a refused message, a failed or empty reply, a
    message that never got one) are not part of it."""
    turns: list[tuple[str, str]] = []
    for ask, answer in zip(messages, messages[1:], strict=False):
        if (
            ask.role == "user"
            and ask.error is None
            and answer.role == "assistant"
            and answer.error is None
            and answer.content.strip()
        ):
            turns.append((ask.content, answer.content))
    return turns


def fit(
    system_prompt: str,
    turns: Sequence[tuple[str, str]],
    message: str,
    measure: Measure,
    *,
    max_tokens: int,
    policy: str = DROP_OLDEST,
) -> Window:
    """The prompt for ``message`` after ``turns``, with room for a reply of up to
    ``max_tokens`` (at most half the context) where the policy allows."""

    def build(first: int) -> list[ChatTurn]:
        prefix = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
        body = [
            turn
            for ask, answer in turns[first:]
            for turn in ({"role": "user", "content": ask}, {"role": "assistant", "content": answer})
        ]
        return [*prefix, *body, {"role": "user", "content": message}]

    everything = build(0)
    tokens, context = measure(everything)
    reserve = min(max_tokens, context // 2)
    if tokens + reserve <= context:
        return Window(everything, 0, tokens, context)
    alone = build(len(turns))
    least = measure(alone)[0] if turns else tokens
    if least >= context:
        what = "This message with the system prompt is" if system_prompt.strip() else "It is"
        return Window(
            [],
            0,
            least,
            context,
            f"Not sent: too long for the model's context. {what} {least} tokens; "
            f"the context holds {context}. Shorten it, or split it in parts.",
        )
    if policy == STOP:
        return Window(
            [],
            0,
            tokens,
            context,
            f"Not sent: the conversation is full ({tokens} tokens, and a reply needs room; "
            f"the context holds {context}). Start a new chat, delete some turns, or let the "
            "chat drop the oldest turns (Settings).",
        )
    # The fewest turns to leave out: sizes shrink as turns go, so search.
    low, high = 1, len(turns)  # dropping `high` turns is known to be the most there is
    sizes = {len(turns): least}
    while low < high:
        middle = (low + high) // 2
        sizes[middle] = measure(build(middle))[0]
        if sizes[middle] + reserve <= context:
            high = middle
        else:
            low = middle + 1
    size = sizes.get(low)
    if size is None:
        size = measure(build(low))[0]
    return Window(build(low), low, size, context)
