"""PromptCache bookkeeping (no model: the saved states are plain byte strings here)."""

from __future__ import annotations

from shimmy.models.promptcache import MIN_GAIN, MIN_TOKENS, PromptCache, continues_a_conversation

LONG = list(range(100))


def test_takes_the_longest_shared_prefix_and_only_when_worth_it() -> None:
    cache = PromptCache(limit_bytes=10_000)
    cache.add(LONG, b"a" * 10)
    cache.add([*LONG[:40], *range(500, 560)], b"b" * 10)
    assert cache.size_bytes == 20 and len(cache) == 2
    # The slot already shares 95 tokens: 100 is not MIN_GAIN better.
    assert cache.take([*LONG, 1, 2], better_than=100 - MIN_GAIN + 1) is None
    saved = cache.take([*LONG, 1, 2], better_than=10)
    assert saved is not None and saved.tokens == LONG and saved.data == b"a" * 10
    assert len(cache) == 1 and cache.size_bytes == 10 and cache.hits == 1  # taken out


def test_wants_only_what_is_new_and_long_enough() -> None:
    cache = PromptCache(limit_bytes=10_000)
    assert not cache.wants(LONG, keep=100 - MIN_TOKENS + 1)  # too little would be lost
    assert cache.wants(LONG, keep=0)
    cache.add(LONG, b"x")
    assert not cache.wants(LONG[:80], keep=0)  # already inside a saved prompt
    assert not PromptCache(limit_bytes=0).wants(LONG, keep=0)  # switched off


def test_a_longer_state_of_a_conversation_replaces_the_shorter() -> None:
    cache = PromptCache(limit_bytes=10_000)
    cache.add(LONG[:60], b"s" * 5)
    cache.add(LONG, b"l" * 8)
    assert len(cache) == 1 and cache.size_bytes == 8


def test_oldest_go_first_past_the_limit() -> None:
    cache = PromptCache(limit_bytes=25)
    for n in range(3):
        cache.add([n, *LONG], bytes(10))
    assert len(cache) == 2 and cache.size_bytes == 20
    assert cache.take([0, *LONG], better_than=0) is None  # the oldest went
    assert cache.take([2, *LONG], better_than=0) is not None
    cache.add([9, *LONG], bytes(26))  # larger than the whole cache: not kept
    assert len(cache) == 1


def test_saved_prompts_serve_only_their_own_scope() -> None:
    cache = PromptCache(limit_bytes=10_000)
    cache.add(LONG, b"a" * 10, scope="a")
    # Another scope: not already saved, so worth saving; nothing to take.
    assert not cache.wants(LONG, keep=0, scope="a")
    assert cache.wants(LONG, keep=0, scope="b")
    assert cache.take([*LONG, 1], better_than=0, scope="b") is None
    assert cache.take([*LONG, 1], better_than=0) is None  # "" is a scope of its own
    # The same tokens saved for "b" neither replace nor are replaced by "a"'s.
    cache.add(LONG[:60], b"b" * 5, scope="b")
    cache.add(LONG, b"c" * 10, scope="b")
    assert len(cache) == 2 and cache.size_bytes == 20
    saved = cache.take([*LONG, 1], better_than=0, scope="a")
    assert saved is not None and saved.data == b"a" * 10 and saved.scope == "a"
    saved = cache.take([*LONG, 1], better_than=0, scope="b")
    assert saved is not None and saved.data == b"c" * 10 and saved.scope == "b"
    assert len(cache) == 0 and cache.hits == 2


def test_conversations_that_never_came_back_are_kept_only_on_trial() -> None:
    """One-shot requests do not fill the cache: only the newest trial_entries
    states of conversations that never continued stay; one that came back stays
    until the byte limit, and so does a continuation of it."""
    cache = PromptCache(limit_bytes=10_000, trial_entries=2)
    cache.add([7, *LONG], b"p" * 10, proven=True)
    for n in range(5):
        cache.add([n, *LONG], b"t" * 10)
    assert len(cache) == 3 and cache.size_bytes == 30
    assert cache.take([0, *LONG], better_than=0) is None  # an old trial: gone
    assert cache.take([4, *LONG], better_than=0) is not None  # the newest: kept
    # A longer state of the proven conversation is proven too.
    cache.add([7, *LONG, 1, 2], b"q" * 12)
    for n in range(10, 15):
        cache.add([n, *LONG], b"t" * 10)
    saved = cache.take([7, *LONG, 1, 2, 3], better_than=0)
    assert saved is not None and saved.proven and saved.data == b"q" * 12


def test_a_conversation_continues_when_most_of_its_prompt_was_decoded_before() -> None:
    assert continues_a_conversation(reused=MIN_TOKENS, prompt=2 * MIN_TOKENS)
    assert not continues_a_conversation(reused=MIN_TOKENS - 1, prompt=MIN_TOKENS)
    # A shared head (a default system prompt) before a longer new question: no.
    assert not continues_a_conversation(reused=40, prompt=200)
