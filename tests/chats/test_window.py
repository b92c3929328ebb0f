"""What of a conversation is sent: failed turns never, the oldest turns left out
when the context is full (or nothing sent, by the "stop" policy), and a message
too long for the context refused with the numbers."""

from __future__ import annotations

from shimmy.chats.store import StoredMessage
from shimmy.chats.window import DROP_OLDEST, STOP, ChatTurn, context_turns, fit


class WordCounter:
    """A model whose template costs 3 tokens a message and one token a word."""

    def __init__(self, context: int) -> None:
        self.context = context
        self.calls = 0

    def __call__(self, messages: list[ChatTurn]) -> tuple[int, int]:
        self.calls += 1
        return sum(3 + len(m["content"].split()) for m in messages), self.context


def message(i: int, role: str, content: str, error: str | None = None) -> StoredMessage:
    return StoredMessage(i, 1, role, content, float(i), error=error)


def test_failed_turns_are_left_out() -> None:
    messages = [
        message(1, "user", "first"),
        message(2, "assistant", "one"),
        message(3, "user", "far too long", error="Not sent: too long"),
        message(4, "user", "second"),
        message(5, "assistant", "", error="model not found"),
        message(6, "user", "third"),
        message(7, "assistant", ""),  # stopped before a word: nothing to send
        message(8, "user", "fourth"),
        message(9, "assistant", "four, cut off"),  # a crash cut it: what there is counts
        message(10, "user", "no reply ever came"),
    ]
    assert context_turns(messages) == [("first", "one"), ("fourth", "four, cut off")]


def test_everything_is_sent_when_it_fits() -> None:
    turns = [("a b", "c d")] * 3
    window = fit("Be brief.", turns, "hello", WordCounter(100), max_tokens=20)
    assert window.refused is None and window.dropped == 0 and window.note is None
    assert window.messages[0] == {"role": "system", "content": "Be brief."}
    assert window.messages[-1] == {"role": "user", "content": "hello"}
    assert len(window.messages) == 8


def test_the_oldest_turns_are_dropped_keeping_the_system_prompt() -> None:
    turns = [(f"question {i} " + "w " * 10, f"answer {i} " + "w " * 10) for i in range(20)]
    counter = WordCounter(200)
    window = fit("Be brief.", turns, "last one", counter, max_tokens=40)
    assert window.refused is None
    assert 0 < window.dropped < 20
    assert window.prompt_tokens + 40 <= 200
    assert window.messages[0]["role"] == "system"
    assert window.messages[1]["content"].startswith(f"question {window.dropped} ")
    assert window.messages[-1]["content"] == "last one"
    # One more turn would not have fit.
    one_more = fit(
        "Be brief.", turns[window.dropped - 1 :], "last one", WordCounter(200), max_tokens=40
    )
    assert one_more.dropped >= 1
    assert window.note is not None and f"the {window.dropped} oldest turns" in window.note
    assert counter.calls <= 8  # a search, not one measure per turn


def test_a_reply_gets_at_most_half_the_context() -> None:
    window = fit("", [("a", "b")], "c", WordCounter(40), max_tokens=1000)
    assert window.dropped == 0 and window.refused is None


def test_a_message_too_long_for_the_context_is_refused_with_the_numbers() -> None:
    window = fit("", [("a", "b")], "word " * 300, WordCounter(256), max_tokens=20)
    assert window.messages == [] and window.refused is not None
    assert "303 tokens" in window.refused and "holds 256" in window.refused


def test_when_only_the_message_fits_it_is_sent_alone() -> None:
    turns = [("q " * 50, "a " * 50)]
    window = fit("", turns, "word " * 200, WordCounter(256), max_tokens=100)
    assert window.refused is None and window.dropped == 1
    assert window.messages == [{"role": "user", "content": "word " * 200}]


def test_the_stop_policy_sends_nothing_and_says_why() -> None:
    turns = [("q " * 50, "a " * 50)] * 4
    window = fit("", turns, "hi", WordCounter(256), max_tokens=40, policy=STOP)
    assert window.messages == [] and window.refused is not None
    assert "conversation is full" in window.refused
    assert fit("", turns, "hi", WordCounter(256), max_tokens=40, policy=DROP_OLDEST).messages
