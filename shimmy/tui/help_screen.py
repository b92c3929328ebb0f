"""The help screen: every key of the dashboard, tab by tab."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# shimmy dashboard

shimmy serves your local GGUF models over HTTP while this dashboard runs.
Every action is also in the command palette (**ctrl+p**); the mouse works too.

| Anywhere | |
|---|---|
| **F1** | this help |
| **F2 / F3 / F4 / F5 / F6** | Models / Chat / Server / Log / Hub tab |
| **ctrl+p** | command palette |
| **ctrl+t** | dark / light theme |
| **ctrl+q** | quit (stops the server and any reply) |

| Models | |
|---|---|
| type, or **/** | filter the list (**Esc** clears) |
| **p** | probe: load, time a short reply, show the figures |
| **l** / **u** | load / unload |
| **d** | make it the default model |
| **r** | run discovery again |

| Chat | |
|---|---|
| **Enter** | send |
| **Esc** | stop the reply |
| **ctrl+n** | new chat |
| **ctrl+r** | regenerate the last reply |
| **ctrl+b** | show / hide the settings (model, system prompt, temperature, max tokens) |

| Server | |
|---|---|
| **s** | start / stop the embedded server |
| **b** | edit the address (HOST:PORT) |
| **o** | switch Ollama's API (the second listener, `--ollama`) on / off |

| Log | |
|---|---|
| **c** | clear |

| Hub | |
|---|---|
| type, **Enter** | search Hugging Face for GGUF models (**/** goes to the search box) |
| **Enter** on a repository | list its model files, and whether each fits in memory |
| **d** | download the selected file (several queue up, one runs at a time) |
| **c** / **x** | cancel the running download / it and every queued one |
"""


class HelpScreen(ModalScreen[None]):
    """Keys and what they do; any of Esc, q or F1 closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,f1", "dismiss", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body") as body:
            body.border_title = "Help"
            body.border_subtitle = "Esc to close"
            yield Markdown(HELP)
