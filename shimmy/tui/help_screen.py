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
| **Enter** | send (pasted text keeps its lines) |
| **ctrl+j** | a new line (also **shift+enter** where the terminal tells it apart) |
| **Esc** | stop the reply; cancel an edit; leave the search |
| **ctrl+n** | new chat (every chat is kept) |
| **ctrl+r** | regenerate the last reply (or retry a message that failed) |
| **↑** in an empty box | edit your last message; Enter sends it again |
| **ctrl+f** | search every chat; **Enter** goes to the matches, **Enter** opens one at its match |
| **ctrl+l** | the chat list: **Enter** opens, **r** renames, **x** deletes (asks), **n** new |
| **shift+tab** | the messages: **↑ ↓** move over messages and code blocks |
| **c** / **e** / **x** | (in the messages) copies the one under the cursor / edits / deletes |
| **ctrl+b** | show / hide the settings: model, system prompt, sampling, a full context |

Chats, their settings, the theme and the default model are kept across restarts
(`shimmy chats` lists and exports them). A message too long for the model's context
is marked and never sent again; a long chat drops its oldest turns (or stops: a setting).

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
