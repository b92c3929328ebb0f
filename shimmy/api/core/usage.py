"""Token counts of one request's generations, for every dialect's usage block."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shimmy.models.generation import Generation


@dataclass(frozen=True)
class Usage:
    """What a request cost: prompt tokens read (``cached_tokens`` of them reused
    from the prompt cache) and tokens generated, summed over its generations."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def of(cls, *generations: Generation) -> Usage:
        return cls.of_all(generations)

    @classmethod
    def of_all(cls, generations: Sequence[Generation]) -> Usage:
        """Summed over ``generations``; the choices of one request (n > 1) share
        its prompt, which is counted once, as OpenAI counts it."""
        prompts = {id(g.choices[0]): g.choices[0] for g in generations}.values()
        return cls(
            prompt_tokens=sum(g.prompt_tokens for g in prompts),
            completion_tokens=sum(g.completion_tokens for g in generations),
            cached_tokens=sum(g.cached_tokens for g in prompts),
        )
