"""The dashboard's footer: the focused tab's keys on the left, the keys that work
everywhere (help, the tab keys, quit, the palette) pinned to the right.

Textual's own Footer lists the focused widget's keys first and the app's last,
so a terminal under about 120 columns cut the F-keys off, the very keys that
lead everywhere else. Here the app's keys sit in a group docked at the right
edge, and F2-F6 share one entry ("f2-f6 Tabs": the tab bar names each tab), so
they fit at 80 columns; what a narrow terminal cuts is the end of the tab's
own keys, which F1 lists in full. Everything is read from the active bindings,
as Textual's Footer does, so a new binding shows without an edit here.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import HorizontalGroup
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

TAB_ACTION = "show_tab"  # the app's action behind F2-F6


class DashboardFooter(Footer):
    """A Footer whose app-wide keys are never cut off by a narrow terminal."""

    DEFAULT_CSS = """
    DashboardFooter #app-keys {
        dock: right;
        width: auto;
        height: 1;
        background: $footer-background;
        border-left: vkey $foreground 20%;
    }
    """

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        app = self.app
        local: list[tuple[Binding, bool, str]] = []
        everywhere: list[tuple[Binding, bool, str]] = []
        seen_actions: set[str] = set()
        for namespace, binding, enabled, tooltip in self.screen.active_bindings.values():
            if not binding.show or binding.action in seen_actions:
                continue  # one entry an action, as Textual's Footer shows them
            seen_actions.add(binding.action)
            (everywhere if namespace is app else local).append((binding, enabled, tooltip))
        for binding, enabled, tooltip in local:
            yield self._key(binding, enabled, tooltip)
        with HorizontalGroup(id="app-keys"):
            tabs = [b for b, _, _ in everywhere if b.action.startswith(TAB_ACTION)]
            for binding, enabled, tooltip in everywhere:
                if binding in tabs:
                    if binding is tabs[0]:
                        yield self._tab_keys(tabs)
                    continue
                yield self._key(binding, enabled, tooltip)
            palette = self.screen.active_bindings.get(app.COMMAND_PALETTE_BINDING)
            if self.show_command_palette and app.ENABLE_COMMAND_PALETTE and palette is not None:
                yield self._key(palette.binding, palette.enabled, palette.tooltip)

    def _key(self, binding: Binding, enabled: bool, tooltip: str) -> FooterKey:
        return FooterKey(
            binding.key,
            self.app.get_key_display(binding),
            binding.description,
            binding.action,
            disabled=not enabled,
            tooltip=tooltip or binding.description,
        ).data_bind(compact=Footer.compact)

    def _tab_keys(self, tabs: list[Binding]) -> FooterKey:
        """One entry for the tab keys: "f2-f6 Tabs" (a click shows the first tab)."""
        first, last = (self.app.get_key_display(b) for b in (tabs[0], tabs[-1]))
        shown = first if len(tabs) == 1 else f"{first}-{last}"
        names = ", ".join(f"{self.app.get_key_display(b)} {b.description}" for b in tabs)
        return FooterKey(tabs[0].key, shown, "Tabs", tabs[0].action, tooltip=names).data_bind(
            compact=Footer.compact
        )
