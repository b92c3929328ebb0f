"""Two shimmy processes on one chats database at once: each writes its own
conversations while the other does (and reads them back meanwhile), and every
write of both is there at the end, in a database that checks out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shimmy.chats import ChatStore

WRITER = """
import sys
from shimmy.chats import ChatStore

path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = ChatStore(path)
print("ready", flush=True)
sys.stdin.readline()  # both start writing together
for i in range(count):
    chat = store.create_conversation(f"{name} {i}")
    ask = store.add_message(chat.id, "user", f"question {i} from {name}")
    reply = store.add_message(chat.id, "assistant", "", model="m")
    for words in range(1, 6):  # a reply saved as it streams
        store.update_message(reply.id, content=f"answer {i} " * words)
    store.update_message(reply.id, tokens=10, finish_reason="stop")
    assert len(store.conversations(limit=5)) >= 1
    assert store.search(name)
store.close()
print("done", flush=True)
"""


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    path = tmp_path / "chats.db"
    ChatStore(path).close()
    count = 100
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), name, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("alpha", "beta")
    ]
    for writer in writers:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
    for writer in writers:
        out, err = writer.communicate(timeout=240)
        assert writer.returncode == 0, err
        assert out.strip() == "done"
    store = ChatStore(path)
    chats = store.conversations(limit=1000)
    assert len(chats) == 2 * count
    for name in ("alpha", "beta"):
        assert sorted(int(c.title.split()[1]) for c in chats if c.title.startswith(name)) == list(
            range(count)
        )
    for chat in chats:
        ask, reply = store.messages(chat.id)
        i = chat.title.split()[1]
        assert reply.content == f"answer {i} " * 5 and reply.finish_reason == "stop"
        assert ask.content.startswith(f"question {i} from")
    assert len(store.search("question")) == 50  # one page
    assert store.integrity_check() == "ok"
    store.close()
