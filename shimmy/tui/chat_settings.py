"""The Chat tab's settings: the model, the system prompt, sampling and what happens
when a conversation outgrows the context.

Each field is checked as it is typed: a bad value turns the field red and says
why under it, and :meth:`ChatSettingsPanel.read` refuses to hand out settings
while any field is bad, so a message is never sent (nor shown as sent) with
them. The values are kept with each conversation and, for new chats, remembered
across runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.validation import Integer, Number
from textual.widget import Widget
from textual.widgets import Input, Label, Select, Static, TextArea

from shimmy.chats.window import DROP_OLDEST, POLICIES
from shimmy.models.generation import SamplingParams
from shimmy.tui.composer import TextField
from shimmy.tui.plain import plain

DEFAULT_CHOICE = "default"
DEFAULT_TEMPERATURE = SamplingParams.temperature  # the engine's, stated once there
DEFAULT_MAX_TOKENS = 512
MAX_TOKENS_LIMIT = 32_768  # the engine also keeps a reply within the context


@dataclass(frozen=True)
class ChatSettings:
    """The sampling and context settings of a conversation (kept as its JSON)."""

    temperature: float = DEFAULT_TEMPERATURE
    max_tokens: int = DEFAULT_MAX_TOKENS
    context_policy: str = DROP_OLDEST

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> ChatSettings:
        """Settings from stored JSON; anything missing or out of range is the default."""
        values = data if isinstance(data, dict) else {}
        settings = cls()
        temperature = values.get("temperature")
        if isinstance(temperature, int | float) and 0 <= temperature <= 2:
            settings = replace(settings, temperature=float(temperature))
        max_tokens = values.get("max_tokens")
        if isinstance(max_tokens, int) and 1 <= max_tokens <= MAX_TOKENS_LIMIT:
            settings = replace(settings, max_tokens=max_tokens)
        policy = values.get("context_policy")
        if isinstance(policy, str) and policy in POLICIES:
            settings = replace(settings, context_policy=policy)
        return settings


class ChatSettingsPanel(VerticalScroll):
    """Model, system prompt, temperature, max tokens and the context policy."""

    @dataclass
    class Changed(Message):
        """A setting changed and every field holds a good value."""

        panel: ChatSettingsPanel

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._default_name: str | None = None
        self._names: list[str] = []

    def compose(self) -> ComposeResult:
        yield Label("Model")
        yield Select(
            [("default model", DEFAULT_CHOICE)],
            value=DEFAULT_CHOICE,
            allow_blank=False,
            id="chat-model",
            compact=True,
        )
        yield Static("", id="default-model-name")
        yield Label("System prompt")
        yield TextField(id="system-prompt", placeholder="(none)", soft_wrap=True, compact=True)
        yield Label("Temperature (0-2)")
        yield Input(
            str(DEFAULT_TEMPERATURE),
            id="temperature",
            type="number",
            compact=True,
            validators=[Number(0, 2, failure_description="a number from 0 to 2")],
            valid_empty=False,
        )
        yield Static("", id="temperature-error", classes="field-error")
        yield Label("Max tokens")
        yield Input(
            str(DEFAULT_MAX_TOKENS),
            id="max-tokens",
            type="integer",
            compact=True,
            validators=[
                Integer(
                    1,
                    MAX_TOKENS_LIMIT,
                    failure_description=f"a whole number from 1 to {MAX_TOKENS_LIMIT}",
                )
            ],
            valid_empty=False,
        )
        yield Static("", id="max-tokens-error", classes="field-error")
        yield Label("When the context is full")
        yield Select(
            [(words, policy) for policy, words in POLICIES.items()],
            value=DROP_OLDEST,
            allow_blank=False,
            id="context-policy",
            compact=True,
        )

    # -- the model list ------------------------------------------------------------

    def set_models(self, names: list[str], default: str | None) -> None:
        """Offer these models besides the default (called after each discovery)."""
        self._names = list(names)
        self._default_name = default
        select = self.query_one("#chat-model", Select)
        current = select.value
        with select.prevent(Select.Changed):
            # Model names come from file names and hub repositories: literal prompts.
            select.set_options([("default model", DEFAULT_CHOICE), *self._options()])
            select.value = current if current in names else DEFAULT_CHOICE
        self._name_the_default()

    def _name_the_default(self) -> None:
        """Under the list, which model "default model" is (when it is the choice)."""
        note = self.query_one("#default-model-name", Static)
        if self.model is not None:
            note.display = False
            return
        note.display = True
        if self._default_name is None:
            note.update(Text("no usable model found", style="red"))
        else:
            note.update(plain(self._default_name, style="dim", overflow="ellipsis", no_wrap=True))

    def default_changed(self, default: str | None) -> None:
        """Name the model "default" now means in the list (after ``d``, say)."""
        if default == self._default_name:
            return
        self.set_models(self._names, default)

    @property
    def model_names(self) -> list[str]:
        return list(self._names)

    @property
    def default_name(self) -> str | None:
        return self._default_name

    def _options(self) -> list[tuple[Text, str]]:
        # One line each, cut with an ellipsis: a wrapped name reads as two models.
        return [(plain(n, overflow="ellipsis", no_wrap=True), n) for n in self._names]

    @property
    def model(self) -> str | None:
        """The model chosen (None: the default model)."""
        choice = self.query_one("#chat-model", Select).value
        return None if choice in (DEFAULT_CHOICE, Select.BLANK) else str(choice)

    def choose_model(self, name: str | None) -> bool:
        """Choose ``name`` (None: the default); false when it is not on offer."""
        select = self.query_one("#chat-model", Select)
        found = name is None or name in self._names
        with select.prevent(Select.Changed):
            select.value = name if found and name is not None else DEFAULT_CHOICE
        self._name_the_default()
        return found

    # -- values --------------------------------------------------------------------

    @property
    def system_prompt(self) -> str:
        return self.query_one("#system-prompt", TextArea).text.strip()

    def read(self) -> ChatSettings | tuple[str, Widget]:
        """The settings, or what is wrong and the field to fix."""
        temperature = self.query_one("#temperature", Input)
        max_tokens = self.query_one("#max-tokens", Input)
        for field, what in ((temperature, "Temperature"), (max_tokens, "Max tokens")):
            result = field.validate(field.value)
            if result is not None and not result.is_valid:
                return f"{what} must be {_why(result.failure_descriptions)}: fix it first", field
        policy = self.query_one("#context-policy", Select).value
        return ChatSettings(
            float(temperature.value),
            int(max_tokens.value),
            str(policy) if policy in POLICIES else DROP_OLDEST,
        )

    def show(self, settings: ChatSettings, system_prompt: str) -> None:
        """Fill the fields in (a conversation was opened, or settings remembered),
        without posting Changed: nothing was changed by the user."""
        for field, value in (
            (self.query_one("#temperature", Input), f"{settings.temperature:g}"),
            (self.query_one("#max-tokens", Input), str(settings.max_tokens)),
        ):
            with field.prevent(Input.Changed):
                field.value = value
            self._show_error(field)
        policy = self.query_one("#context-policy", Select)
        with policy.prevent(Select.Changed):
            policy.value = settings.context_policy
        prompt = self.query_one("#system-prompt", TextArea)
        with prompt.prevent(TextArea.Changed):
            prompt.text = system_prompt

    # -- checking as typed ------------------------------------------------------------

    @on(Input.Changed, "#temperature, #max-tokens")
    def _number_changed(self, event: Input.Changed) -> None:
        event.stop()
        if self._show_error(event.input):
            self._changed()

    def _show_error(self, field: Input) -> bool:
        """Say under ``field`` what is wrong with it, if anything; whether it is good."""
        error = self.query_one(f"#{field.id}-error", Static)
        result = field.validate(field.value)
        if result is None or result.is_valid:
            error.update("")
            error.display = False
            return True
        error.update(Text(f"must be {_why(result.failure_descriptions)}"))
        error.display = True
        return False

    @on(Select.Changed, "#chat-model, #context-policy")
    def _select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self._name_the_default()
        self._changed()

    @on(TextArea.Changed, "#system-prompt")
    def _prompt_changed(self, event: TextArea.Changed) -> None:
        event.stop()
        self._changed()

    def _changed(self) -> None:
        if isinstance(self.read(), ChatSettings):
            self.post_message(self.Changed(self))


def _why(descriptions: list[str]) -> str:
    return descriptions[0] if descriptions else "a valid value"
