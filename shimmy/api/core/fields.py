"""Request fields that every dialect has: sampling settings and stop strings."""

from __future__ import annotations

import dataclasses

from pydantic import BaseModel

from shimmy.models.generation import SamplingParams

# Every stop string is looked for after every token, so a request may not ask for
# thousands of them (80,000 slowed every request on the engine).
MAX_STOP_STRINGS = 16
MAX_TOP_K = 1 << 20  # above any vocabulary, and within the C int llama.cpp takes
MAX_STOP_LENGTH = 500


def check_stop(value: str | list[str] | None) -> str | list[str] | None:
    """A request's ``stop`` within the bounds, else a ValueError that names them
    (raised inside a pydantic validator, it becomes the dialect's 400)."""
    stops = [value] if isinstance(value, str) else value or []
    if len(stops) > MAX_STOP_STRINGS:
        raise ValueError(f"at most {MAX_STOP_STRINGS} stop sequences are allowed")
    if any(len(s) > MAX_STOP_LENGTH for s in stops):
        raise ValueError(f"a stop sequence may be at most {MAX_STOP_LENGTH} characters")
    return value


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    """A request's ``stop`` (absent, one string or a list) as a tuple, empties dropped."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    return tuple(s for s in stop if s)


SAMPLING_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingParams) if f.name != "unset")


def sampling_of(body: BaseModel) -> SamplingParams:
    """The engine's sampling parameters from those a request body has, by name
    (a body without a field leaves the engine's default; ``logit_bias`` comes as
    OpenAI's map of token ids to biases). The fields the request did not send
    are marked ``unset``, for a model preset's defaults to fill."""
    fields = type(body).model_fields
    values = {name: getattr(body, name) for name in SAMPLING_FIELDS if name in fields}
    bias = values.pop("logit_bias", None)
    if bias:
        values["logit_bias"] = tuple((int(token), float(value)) for token, value in bias.items())
    unset = frozenset(SAMPLING_FIELDS) - body.model_fields_set
    return SamplingParams(**values, unset=unset)


MAX_LOGIT_BIAS = 1024  # tokens a request may bias


def check_logit_bias(value: dict[str, float] | None) -> dict[str, float] | None:
    """OpenAI's ``logit_bias``: token ids (as strings) to biases in [-100, 100]."""
    if not value:
        return value
    if len(value) > MAX_LOGIT_BIAS:
        raise ValueError(f"at most {MAX_LOGIT_BIAS} tokens may be biased")
    for token, bias in value.items():
        if not token.strip().isdigit():
            raise ValueError(f"keys must be token ids, got {token[:20]!r}")
        if not -100 <= bias <= 100:
            raise ValueError(f"biases must be between -100 and 100, got {bias}")
    return value
