"""``shimmy search``: GGUF repositories on Hugging Face.

The work is done by :mod:`shimmy.models.hub`; huggingface_hub is imported only
when the command runs.
"""

from __future__ import annotations

import argparse
import json
import sys

from shimmy.cli.output import print_table
from shimmy.errors import ExitCode


def cmd_search(args: argparse.Namespace) -> int:
    """A table of the matching repositories (or --json), best first by --sort."""
    from shimmy.models.hub import search_models
    from shimmy.units import format_count, format_params

    models = search_models(args.query, limit=args.limit, sort=args.sort)
    if args.json:
        print(json.dumps([m.to_json() for m in models], indent=2))
        return ExitCode.OK
    if not models:
        print(f"No GGUF models match '{args.query}'.", file=sys.stderr)
        return ExitCode.OK
    rows = [("REPO", "PARAMS", "DOWNLOADS", "LIKES", "UPDATED")]
    for m in models:
        rows.append(
            (
                m.repo_id,
                format_params(m.parameters) if m.parameters else "-",
                format_count(m.downloads),
                format_count(m.likes),
                m.last_modified.date().isoformat() if m.last_modified else "-",
            )
        )
    print_table(rows)
    return ExitCode.OK
