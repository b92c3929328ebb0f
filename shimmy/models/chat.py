"""Chat prompts rendered with the model's own template.

A GGUF model carries its Hugging Face chat template (Jinja2) in
``tokenizer.chat_template``. We render it in a sandbox, with the model's BOS and
EOS token strings, exactly as transformers' ``apply_chat_template`` would. Only
a model without a template falls back to ChatML; the template is never guessed
from the file name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from shimmy.errors import ShimmyError

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# End-of-turn markers of well-known template families. The template's own EOS
# token always stops generation (llama.cpp marks it end-of-generation); these
# catch templates whose turn ends with a different special token.
_KNOWN_TURN_ENDS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")

Message = Mapping[str, Any]


class _TemplateError(Exception):
    """Raised by a template's own ``raise_exception(...)`` call."""


def _raise_exception(message: str) -> None:
    raise _TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    # transformers renders tojson without escaping non-ASCII text; match it so
    # prompts are byte-identical to what the model was trained on.
    return json.dumps(value, ensure_ascii=False, indent=indent)


@lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    # As transformers renders chat templates: some use {% break %} / {% continue %}.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.ChainableUndefined,
        extensions=["jinja2.ext.loopcontrols"],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


@dataclass(frozen=True)
class ChatTemplate:
    """A model's chat template with the special tokens it refers to."""

    source: str
    bos_token: str = ""
    eos_token: str = ""
    is_fallback: bool = False

    @classmethod
    def for_model(
        cls, template: str | None, bos_token: str | None, eos_token: str | None
    ) -> ChatTemplate:
        if template and template.strip():
            return cls(template, bos_token or "", eos_token or "")
        return cls(CHATML_TEMPLATE, bos_token or "", eos_token or "", is_fallback=True)

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages``; ``invalid_request`` if the template rejects them."""
        if not messages:
            raise ShimmyError("invalid_request", "messages must not be empty")
        try:
            template = _compile(self.source)
        except jinja2.TemplateError as exc:
            raise ShimmyError(
                "model_invalid", "The model's chat template does not compile", str(exc)
            ) from exc
        try:
            return template.render(
                messages=[dict(m) for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except _TemplateError as exc:
            raise ShimmyError(
                "invalid_request", "The model's chat template rejected the messages", str(exc)
            ) from exc
        except jinja2.TemplateError as exc:
            raise ShimmyError(
                "invalid_request", "The chat template failed to render", str(exc)
            ) from exc

    def stop_strings(self) -> list[str]:
        """Turn-end markers that appear in this template (to stop on, never to emit)."""
        found = [end for end in _KNOWN_TURN_ENDS if end in self.source]
        if self.eos_token and self.eos_token not in found:
            found.append(self.eos_token)
        return found
