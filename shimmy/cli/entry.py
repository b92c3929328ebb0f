"""The ``shimmy`` entry point: parse, set up logging, run the command, map its failure
to an exit code (:class:`shimmy.errors.ExitCode`, their one place).

stdout carries results (generated text, tables, JSON); diagnostics and errors go
to stderr as one line each.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence

from shimmy.cli.chats import cmd_chats
from shimmy.cli.dashboard import cmd_dashboard
from shimmy.cli.diag import cmd_diag
from shimmy.cli.generate import cmd_generate
from shimmy.cli.listing import cmd_list
from shimmy.cli.parser import build_parser
from shimmy.cli.probe import cmd_probe
from shimmy.cli.ps import cmd_ps
from shimmy.cli.pull import cmd_pull, cmd_rm
from shimmy.cli.search import cmd_search
from shimmy.cli.serve import cmd_serve
from shimmy.cli.worker import cmd_worker
from shimmy.errors import ExitCode, ShimmyError

log = logging.getLogger("shimmy")

COMMANDS: dict[str | None, Callable[[argparse.Namespace], int]] = {
    None: cmd_dashboard,
    "serve": cmd_serve,
    "generate": cmd_generate,
    "list": cmd_list,
    "probe": cmd_probe,
    "diag": cmd_diag,
    "ps": cmd_ps,
    "search": cmd_search,
    "pull": cmd_pull,
    "rm": cmd_rm,
    "chats": cmd_chats,
    "worker": cmd_worker,
}


def _setup_logging(verbose: bool) -> None:
    from shimmy.redact import RedactQueryStrings

    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactQueryStrings())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    # uvicorn's error logger says "Started server process" etc.: useful, not noisy.
    logging.getLogger("uvicorn.error").setLevel(logging.INFO)
    # A preset's model pulled on first use holds its requests for the whole
    # download: its progress is worth a line every tenth of the way.
    logging.getLogger("shimmy.models.first_use_pull").setLevel(logging.INFO)
    if not verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``shimmy`` with ``argv`` (default: the process's) and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    # A second Ctrl-C while shutting down exits at once rather than printing a traceback.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    try:
        return int(COMMANDS[args.command](args))
    except ShimmyError as exc:
        print(exc.one_line(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (e.g. `shimmy list | head`): not an error worth a traceback.
        sys.stderr.close()
        return ExitCode.OK
    finally:
        log.debug("%s took %.2fs", args.command or "dashboard", time.monotonic() - started)
