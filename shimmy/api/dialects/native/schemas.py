"""Request bodies of the native API (SEED-API.md), validated strictly.

Strict mode: a string where a number belongs is an ``invalid_request``, not a
silent coercion. Fields beyond the seed's are optional and documented in
README.md; the seed's defaults are kept exactly.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shimmy.api.core.fields import MAX_TOP_K, check_stop, sampling_of, stop_strings
from shimmy.models.generation import DEFAULT_MAX_TOKENS, SamplingParams

# The engine's defaults are the seed's (SEED-API.md), stated once beside it.
_SAMPLING = SamplingParams()


class GenerateBody(BaseModel):
    """``POST /api/generate`` and the frames of ``/ws/generate``."""

    model_config = ConfigDict(strict=True, extra="ignore")

    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, ge=1)
    temperature: float = Field(default=_SAMPLING.temperature, ge=0.0, le=2.0)
    stream: bool = False
    # Beyond the seed: the rest of the engine's sampling parameters.
    top_p: float = Field(default=_SAMPLING.top_p, gt=0.0, le=1.0)
    top_k: int = Field(default=_SAMPLING.top_k, ge=0, le=MAX_TOP_K)
    min_p: float = Field(default=_SAMPLING.min_p, ge=0.0, le=1.0)
    repeat_penalty: float = Field(default=_SAMPLING.repeat_penalty, gt=0.0)
    seed: int | None = None
    stop: list[str] | str | None = None
    # Send the prompt as it is, without the model's chat template.
    raw: bool = False

    @field_validator("stop")
    @classmethod
    def _bounded_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        return check_stop(value)

    def sampling(self) -> SamplingParams:
        return sampling_of(self)

    def stop_strings(self) -> tuple[str, ...]:
        return stop_strings(self.stop)
