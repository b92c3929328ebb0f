"""Secrets out of the logs: query strings are redacted before any handler writes
a record (a WebSocket client may pass its API key as ``?api_key=KEY``, and
uvicorn logs the path of every WebSocket it accepts, query and all)."""

from __future__ import annotations

import logging
import re

# "name=value" right after a "?" or "&" in anything URL-like; the value ends at
# whitespace, a quote, "&" or "#".
_QUERY_VALUE = re.compile(r"([?&][^=&\s\"'#]{1,100}=)[^&\s\"'#]+")
REDACTED = "[redacted]"


def redact_query_strings(text: str) -> str:
    """``text`` with every query-string value replaced by ``[redacted]``."""
    if "=" not in text:
        return text
    return _QUERY_VALUE.sub(lambda m: m.group(1) + REDACTED, text)


class RedactQueryStrings(logging.Filter):
    """A handler filter: formats the record's message once and redacts it, so
    that the secret is gone from whatever the handler's formatter writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_query_strings(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
