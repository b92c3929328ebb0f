"""Every key of the dashboard, read from the registered bindings.

The help screen (F1) and the command palette (ctrl+p) are both built from what
:func:`dashboard_keys` finds, so neither can drift from the keys that really
work (a hand-written copy did: it missed Tab, scrolling and copying). It reads:

- the app's bindings and the main screen's (Tab, shift+Tab, ctrl+c), Textual's
  included, system ones left out;
- in each tab, the bindings declared by shimmy's own widget classes, in the
  order the widgets sit (Textual's own widgets bring cursor keys everyone knows);
- :data:`UNBOUND`: the few keys a widget handles in its own code (the message
  box's Enter, the Select's menu), which no binding can list.

A binding's ``tooltip`` is its longer text (the footer's hover, the help's line,
the palette's title); its ``description`` is the footer's short label.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from textual.app import App
from textual.binding import Binding, BindingType
from textual.dom import DOMNode
from textual.keys import format_key
from textual.widget import Widget

ANYWHERE = "anywhere"

# Keys handled in a widget's own code rather than by a binding: (keys, what they
# do), by section. Keep each beside the code's behaviour when it changes.
UNBOUND: dict[str, tuple[tuple[str, str], ...]] = {
    ANYWHERE: (("mouse", "Click a tab, a row or a button; the wheel scrolls; drag to select"),),
    "chat": (
        # Composer._on_key
        ("Enter", "Send the message (a paste keeps its lines)"),
        ("ctrl+j / shift+Enter", "A new line (shift+Enter where the terminal tells it apart)"),
        ("↑ in an empty box", "Edit your last message; Enter sends it again"),
    ),
    "server": (("Enter in the address box", "Start the server on that address"),),
    "log": (("Tab", "Reach the level and text filters"),),
    "hub": (
        ("Enter in the search box", "Search Hugging Face for GGUF models"),
        ("Enter on a repository", "List its model files, and whether each fits in memory"),
        ("Tab to the sort box, Enter", "Open it: ↑ ↓ pick the order, Enter chooses"),
    ),
}

# How a key is written for people (the rest: Textual's own names, "f1" as "F1").
_KEY_NAMES = {
    "escape": "Esc",
    "enter": "Enter",
    "tab": "Tab",
    "delete": "Delete",
    "pageup": "PgUp",
    "pagedown": "PgDn",
    "home": "Home",
    "end": "End",
    "up": "↑",
    "down": "↓",
    "left": "←",
    "right": "→",
}


def key_label(keys: str) -> str:
    """A binding's ``key`` as people write it: "ctrl+q", "F1", "/", "x / Delete"."""
    labels = []
    for key in keys.split(","):
        *modifiers, name = key.strip().split("+")
        if name in _KEY_NAMES:
            shown = _KEY_NAMES[name]
        elif len(name) > 1 and name[0] == "f" and name[1:].isdigit():
            shown = name.upper()
        else:
            shown = format_key(name)
        labels.append("+".join([*modifiers, shown]))
    return " / ".join(labels)


@dataclass(frozen=True)
class KeyRow:
    """One line of help: ``keys`` as shown, what they do, and where a binding's
    action runs (``node``; None for a key no binding holds)."""

    keys: str
    text: str
    binding: Binding | None = None
    node: DOMNode | None = None

    @property
    def title(self) -> str:
        """The short name (the footer's label), or the text for an unbound key."""
        return self.binding.description if self.binding is not None else self.text


@dataclass
class KeyGroup:
    """Keys that act in one place: a whole tab, or one part of it (``where``)."""

    where: str
    rows: list[KeyRow] = field(default_factory=list)


@dataclass
class Section:
    """The keys of one tab (``id`` is the tab's), or of the whole dashboard."""

    id: str
    title: str
    groups: list[KeyGroup] = field(default_factory=list)

    def rows(self) -> Iterator[KeyRow]:
        for group in self.groups:
            yield from group.rows


def _as_binding(entry: BindingType) -> Binding:
    return entry if isinstance(entry, Binding) else Binding(*entry)


def _row(binding: Binding, node: DOMNode) -> KeyRow:
    text = binding.tooltip or binding.description
    return KeyRow(key_label(binding.key), text, binding, node)


def own_bindings(node: DOMNode) -> list[Binding]:
    """The bindings shimmy's own classes declare for ``node`` (a subclass's binding
    replaces its base's for the same keys), in the order they are declared."""
    by_key: dict[str, Binding] = {}
    for cls in reversed(type(node).__mro__):
        if not cls.__module__.startswith("shimmy."):
            continue
        for entry in cls.__dict__.get("BINDINGS", ()):
            binding = _as_binding(entry)
            by_key[binding.key] = binding
    return list(by_key.values())


def _active_bindings(node: DOMNode) -> list[Binding]:
    """Every non-system binding ``node`` holds (inherited ones too), a key list
    such as "x,delete" gathered back into one binding per action."""
    gathered: dict[tuple[str, str], Binding] = {}
    for key, binding in node._bindings:
        if binding.system:
            continue
        found = gathered.get((binding.action, binding.description))
        if found is None:
            gathered[(binding.action, binding.description)] = binding
        elif key not in found.key.split(","):
            gathered[(binding.action, binding.description)] = Binding(
                f"{found.key},{key}",
                found.action,
                found.description,
                tooltip=found.tooltip,
            )
    return list(gathered.values())


def _where(widget: Widget, pane: Widget) -> str:
    """Where a widget's keys work, for the help: "" for the tab itself."""
    if widget is pane:
        return ""
    named = getattr(type(widget), "KEYS_WHERE", None)
    if isinstance(named, str):
        return named
    # "ConversationList" -> "in the conversation list"
    words = "".join(f" {c.lower()}" if c.isupper() else c for c in type(widget).__name__)
    return f"in the{words}"


def _unbound(section: str) -> list[KeyRow]:
    return [KeyRow(keys, text) for keys, text in UNBOUND.get(section, ())]


def dashboard_keys(app: App[Any], tabs: Iterable[tuple[str, str, Widget]]) -> list[Section]:
    """The dashboard's keys: a section for everywhere, then one per tab, given as
    (tab id, title, pane) in the order of the tabs."""
    anywhere = KeyGroup("")
    seen: set[str] = set()
    for node in (app, app.screen_stack[0]):
        for binding in _active_bindings(node):
            keys = key_label(binding.key)
            if keys not in seen:  # the app's ctrl+q hides Textual's own
                seen.add(keys)
                anywhere.rows.append(_row(binding, node))
    anywhere.rows.extend(_unbound(ANYWHERE))
    sections = [Section(ANYWHERE, "Anywhere", [anywhere])]
    for tab_id, title, pane in tabs:
        section = Section(tab_id, title)
        groups: dict[type[Widget], KeyGroup] = {}
        for widget in pane.walk_children(Widget, with_self=True):
            if type(widget) in groups:
                continue  # one group per kind of widget (every message is alike)
            bindings = own_bindings(widget)
            if bindings:
                group = groups[type(widget)] = KeyGroup(_where(widget, pane))
                group.rows.extend(_row(binding, widget) for binding in bindings)
                section.groups.append(group)
        # Keys of the tab's boxes and lists go with the tab's own.
        if not section.groups or section.groups[0].where:
            section.groups.insert(0, KeyGroup(""))
        section.groups[0].rows.extend(_unbound(tab_id))
        sections.append(section)
    return sections
