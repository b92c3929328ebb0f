"""The Chat tab's sidebar: every conversation, most recent first, and a search.

The list loads a page at a time (more as the highlight nears its end), so ten
thousand conversations open as fast as ten. Typing in the search box searches
every title and message (SQLite FTS5) and lists one match per conversation with
the matched words marked; Enter on a match opens the conversation at it. Reads
run in thread workers; another shimmy writing to the same database is noticed
(every two seconds) and the list reloaded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, OptionList
from textual.widgets.option_list import Option

from shimmy.chats import MATCH_END, MATCH_START, ChatStore, Conversation, SearchHit
from shimmy.chats.store import PAGE_SIZE

SEARCH_DELAY = 0.15  # seconds of no typing before a search runs
CHECK_INTERVAL = 2.0  # seconds between looks for another process's writes
SNIPPET_LENGTH = 90
LIST_TITLE = "Chats"
DEFAULT_WIDTH = 26  # cells of an entry's line before the list is laid out


def when(seconds: float, now: float) -> str:
    """A conversation's time in the list, short: the time today, the day this
    year, else the date (local time)."""
    then = time.localtime(seconds)
    today = time.localtime(now)
    if then[:3] == today[:3]:
        return time.strftime("%H:%M", then)
    if then.tm_year == today.tm_year:
        return time.strftime("%b %d", then)
    return time.strftime("%Y-%m-%d", then)


def lines(*parts: Text, width: int) -> Text:
    """``parts`` one a line, each cut to ``width`` cells with an ellipsis (an
    option list wraps long lines, which would make each entry a different height)."""
    text = Text()
    for i, part in enumerate(parts):
        part.truncate(width, overflow="ellipsis")
        if i:
            text.append("\n")
        text.append_text(part)
    return text


def conversation_prompt(conversation: Conversation, width: int, now: float) -> Text:
    """Two lines: the title, then the time of the last change and the model
    ("default": the settings name which one that is)."""
    model = conversation.model or "default"
    return lines(
        Text(conversation.title, style="bold"),
        Text(f"{when(conversation.updated_at, now)} · {model}", style="dim"),
        width=width,
    )


def marked(snippet: str, style: str = "bold reverse") -> Text:
    """A search snippet with its matched words in ``style`` (never read as markup)."""
    text = Text()
    rest = snippet
    if len(rest) > SNIPPET_LENGTH:  # keep the first match in view
        start = max(0, rest.find(MATCH_START) - SNIPPET_LENGTH // 3)
        rest = ("…" if start else "") + rest[start : start + SNIPPET_LENGTH] + "…"
    while rest:
        before, found, after = rest.partition(MATCH_START)
        text.append(before)
        if not found:
            break
        word, _, rest = after.partition(MATCH_END)
        text.append(word, style=style)
    return text


def hit_prompt(hit: SearchHit, width: int, now: float) -> Text:
    """The title and the match: the title's marked words, or a message's snippet
    (on two lines)."""
    if hit.message_id is None:  # the title matched
        title = marked(hit.snippet)
        title.stylize("bold")
        changed = when(hit.conversation.updated_at, now)
        return lines(title, Text(changed, style="dim"), width=width)
    snippet = marked(hit.snippet)
    parts = [snippet]
    if snippet.cell_len > width:  # two lines, broken between words where one fits
        space = snippet.plain.rfind(" ", 0, width + 1)
        if space > width // 2:
            parts = [snippet[:space], snippet[space + 1 :]]
        else:
            parts = [snippet[:width], snippet[width:]]
    return lines(Text(hit.conversation.title, style="bold"), *parts, width=width)


class ConversationList(OptionList):
    """The conversations (or the matches of a search); keys act on the highlighted one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "rename", "Rename"),
        Binding("x,delete", "delete", "Delete"),
        Binding("n", "new", "New chat"),
        Binding("slash", "search", "Search", show=False),
    ]

    @dataclass
    class Act(Message):
        """A key asked for ``action`` ("rename", "delete", "new", "search")."""

        action: str

    def action_rename(self) -> None:
        self.post_message(self.Act("rename"))

    def action_delete(self) -> None:
        self.post_message(self.Act("delete"))

    def action_new(self) -> None:
        self.post_message(self.Act("new"))

    def action_search(self) -> None:
        self.post_message(self.Act("search"))


class ChatSidebar(Vertical):
    """Search box over a list of conversations."""

    @dataclass
    class OpenRequested(Message):
        """Open this conversation (at ``message_id``, a search's match, if given)."""

        conversation_id: int
        message_id: int | None = None

    @dataclass
    class ActOn(Message):
        """Rename, delete (or start a new chat from) the highlighted conversation."""

        action: str
        conversation: Conversation | None

    @dataclass
    class PageLoaded(Message):
        conversations: list[Conversation]
        first: bool
        load: int  # which reload it belongs to: a late page of an old one is dropped

    @dataclass
    class SearchDone(Message):
        text: str
        hits: list[SearchHit]

    @dataclass
    class ChangedElsewhere(Message):
        """Another connection (another shimmy) wrote to the database."""

    # kwargs: Textual's widget options (id, classes...), handed on as they are.
    def __init__(self, store: ChatStore, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.conversations: list[Conversation] = []
        self.hits: list[SearchHit] | None = None  # None: listing, not searching
        self.hits_for: str | None = None  # the search text the hits are for
        self.open_id: int | None = None
        self._complete = False  # every page is loaded
        self._load = 0
        self._search_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Search chats (ctrl+f)", id="chat-search", compact=True)
        options = ConversationList(id="conversations")
        options.border_title = LIST_TITLE
        yield options

    def on_mount(self) -> None:
        self.reload()
        self.set_interval(CHECK_INTERVAL, self._look_elsewhere)

    @property
    def option_list(self) -> ConversationList:
        return self.query_one(ConversationList)

    @property
    def searching(self) -> bool:
        return self.hits is not None

    # -- the list ------------------------------------------------------------------

    def reload(self) -> None:
        """Load the first page again (a conversation was added, renamed, deleted...)."""
        self._load += 1
        self._read_page(None, self._load)

    @work(thread=True, group="chat-list", exit_on_error=False, description="chat list")
    def _read_page(self, after: Conversation | None, load: int) -> None:
        page = self.store.conversations(PAGE_SIZE, after=after)
        self.post_message(self.PageLoaded(page, after is None, load))

    @on(PageLoaded)
    def _page_loaded(self, message: PageLoaded) -> None:
        if message.load != self._load:
            return
        self._complete = len(message.conversations) < PAGE_SIZE
        if message.first:
            self.conversations = list(message.conversations)
        else:
            known = {c.id for c in self.conversations}
            self.conversations += [c for c in message.conversations if c.id not in known]
        if not self.searching:
            self._show_conversations()

    def _show_conversations(self) -> None:
        options = self.option_list
        highlighted = options.highlighted_option
        keep = highlighted.id if highlighted is not None else None
        options.clear_options()
        width, now = self._width(), self.store.clock()
        options.add_options(
            Option(conversation_prompt(c, width, now), id=str(c.id)) for c in self.conversations
        )
        wanted = keep or (str(self.open_id) if self.open_id is not None else None)
        if wanted is not None:
            self._highlight(wanted)

    def _width(self) -> int:
        """Cells an entry's line may take (the list's width less its padding)."""
        width = self.option_list.scrollable_content_region.width - 2
        return width if width >= 12 else DEFAULT_WIDTH

    def _highlight(self, option_id: str) -> None:
        options = self.option_list
        try:
            options.highlighted = options.get_option_index(option_id)
        except Exception:  # OptionDoesNotExist: not on the pages loaded
            return

    def mark_open(self, conversation_id: int | None) -> None:
        """The conversation now open (highlighted in the list when it is there)."""
        self.open_id = conversation_id
        if conversation_id is not None and not self.searching:
            self._highlight(str(conversation_id))

    @on(OptionList.OptionHighlighted, "#conversations")
    def _near_the_end(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        if self.searching or self._complete or not self.conversations:
            return
        if event.option_index >= len(self.conversations) - 5:
            self._complete = True  # until the page says otherwise
            self._read_page(self.conversations[-1], self._load)

    @on(OptionList.OptionSelected, "#conversations")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if self.hits is not None:
            hit = self.hits[event.option_index]
            self.post_message(self.OpenRequested(hit.conversation.id, hit.message_id))
        else:
            self.post_message(self.OpenRequested(self.conversations[event.option_index].id))

    def highlighted_conversation(self) -> Conversation | None:
        index = self.option_list.highlighted
        if index is None:
            return None
        if self.hits is not None:
            return self.hits[index].conversation if index < len(self.hits) else None
        return self.conversations[index] if index < len(self.conversations) else None

    @on(ConversationList.Act)
    def _act(self, message: ConversationList.Act) -> None:
        message.stop()
        if message.action == "search":
            self.focus_search()
            return
        self.post_message(self.ActOn(message.action, self.highlighted_conversation()))

    @work(thread=True, group="chat-list-check", exit_on_error=False, description="chat list check")
    def _look_elsewhere(self) -> None:
        if self.store.changed_elsewhere():
            self.post_message(self.ChangedElsewhere())

    @on(ChangedElsewhere)
    def _reload_or_search(self) -> None:
        self.reload()
        if self.searching:
            self._search(self.query_one("#chat-search", Input).value)

    # -- search --------------------------------------------------------------------

    def focus_search(self) -> None:
        self.query_one("#chat-search", Input).focus()

    @on(Input.Changed, "#chat-search")
    def _typed(self, event: Input.Changed) -> None:
        event.stop()
        if self._search_timer is not None:
            self._search_timer.stop()
        text = event.value
        if not text.strip():
            self.hits = self.hits_for = None
            self.option_list.border_title = LIST_TITLE
            self._show_conversations()
            return
        self._search_timer = self.set_timer(SEARCH_DELAY, lambda: self._search(text))

    @on(Input.Submitted, "#chat-search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        options = self.option_list
        if options.option_count:
            options.focus()
            if options.highlighted is None:
                options.highlighted = 0

    @work(thread=True, group="chat-search", exit_on_error=False, description="search chats")
    def _search(self, text: str) -> None:
        self.post_message(self.SearchDone(text, self.store.search(text)))

    @on(SearchDone)
    def _search_done(self, message: SearchDone) -> None:
        if message.text != self.query_one("#chat-search", Input).value:
            return  # typed on since
        self.hits, self.hits_for = message.hits, message.text
        options = self.option_list
        options.clear_options()
        if message.hits:
            width, now = self._width(), self.store.clock()
            options.add_options(
                Option(hit_prompt(h, width, now), id=f"{h.conversation.id}:{h.message_id}")
                for h in message.hits
            )
            options.highlighted = 0
            count = len(message.hits)
            options.border_title = f"{count} match{'es' if count != 1 else ''}"
        else:
            options.add_option(Option(Text("No chat matches.", style="dim"), disabled=True))
            options.border_title = "no match"

    def clear_search(self) -> bool:
        """Leave the search (Esc); false when there was none."""
        field = self.query_one("#chat-search", Input)
        if not field.value:
            return False
        field.value = ""
        return True
