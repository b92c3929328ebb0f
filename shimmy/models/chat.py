"""Chat prompts rendered with the model's own template.

A GGUF model carries its Hugging Face chat template (Jinja2) in
``tokenizer.chat_template``. We render it in a sandbox, with the model's BOS and
EOS token strings, exactly as transformers' ``apply_chat_template`` would. Only
a model without a template falls back to ChatML; the template is never guessed
from the file name. The template comes from a stranger's file, so it is rendered
in a worker process bounded in time, output and memory, and a render can be
stopped when its client leaves (template_render.py says why and how).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shimmy.errors import ShimmyError
from shimmy.models.template_render import RenderCancelled, TemplateRenderer, shared_renderer

__all__ = ["CHATML_TEMPLATE", "ChatTemplate", "Message", "RenderCancelled"]

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

    def render(
        self,
        messages: Sequence[Message],
        add_generation_prompt: bool = True,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        cancel: threading.Event | None = None,
        renderer: TemplateRenderer | None = None,
    ) -> str:
        """The prompt text for ``messages``.

        ``invalid_request`` if the template rejects them; ``model_invalid`` if it
        does not compile or runs out of time, output or memory (the limits of
        ``renderer``, by default the process's shared one); ``RenderCancelled``
        as soon as ``cancel`` is set.
        """
        if not messages:
            raise ShimmyError("invalid_request", "messages must not be empty")
        context: dict[str, Any] = {
            "messages": [dict(m) for m in messages],
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }
        if tools is not None:  # as transformers' apply_chat_template passes them
            context["tools"] = [dict(tool) for tool in tools]
        return (renderer or shared_renderer()).render(self.source, context, cancel)

    def stop_strings(self) -> list[str]:
        """Turn-end markers that appear in this template (to stop on, never to emit)."""
        found = [end for end in _KNOWN_TURN_ENDS if end in self.source]
        if self.eos_token and self.eos_token not in found:
            found.append(self.eos_token)
        return found
