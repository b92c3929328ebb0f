"""``shimmy generate``: one completion, streamed to stdout as it is made."""

from __future__ import annotations

import argparse
import logging
import sys

from shimmy.cli.settings import open_manager, settings_from
from shimmy.errors import ExitCode, ShimmyError

log = logging.getLogger("shimmy")


def _read_prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None and args.prompt != "-":
        return str(args.prompt)
    if args.prompt is None and sys.stdin.isatty():
        raise ShimmyError("invalid_request", "No prompt given", "use --prompt TEXT or pipe text in")
    return sys.stdin.read()


# The sampling flags of `generate`, by their SamplingParams names.
SAMPLED_FLAGS = frozenset({"temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed"})


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate from --prompt (or stdin) with the default model; -v logs the figures."""
    from shimmy.models.generation import SamplingParams

    prompt = _read_prompt(args)
    if not prompt.strip():
        raise ShimmyError("invalid_request", "The prompt is empty")
    if args.max_tokens < 1:
        raise ShimmyError("invalid_request", "--max-tokens must be at least 1")
    if not 0 <= args.temperature <= 2:
        raise ShimmyError("invalid_request", "--temperature must be between 0 and 2")
    settings = settings_from(args)
    manager = open_manager(settings)
    try:
        generation = manager.submit_prompt(
            None,  # the default: --model, which may be a path (settings.model)
            prompt,
            max_tokens=args.max_tokens,
            sampling=SamplingParams(
                temperature=args.temperature,
                top_p=args.top_p,
                top_k=args.top_k,
                min_p=args.min_p,
                repeat_penalty=args.repeat_penalty,
                seed=args.seed,
                # A preset's defaults fill the flags not given (presets.py).
                unset=SAMPLED_FLAGS - getattr(args, "given", frozenset()),
            ),
            stop=args.stop,
            raw=args.raw,
            label="cli",
        )
        try:
            for piece in generation:
                if piece.text:
                    sys.stdout.write(piece.text)
                    sys.stdout.flush()
        except KeyboardInterrupt:
            generation.cancel()
            sys.stdout.write("\n")
            return ExitCode.INTERRUPTED
        sys.stdout.write("\n")
        sys.stdout.flush()
        speed = generation.tokens_per_second
        log.info(
            "%s: %d prompt + %d completion tokens, %s tok/s, finish %s",
            generation.model,
            generation.prompt_tokens,
            generation.completion_tokens,
            f"{speed:.1f}" if speed else "-",
            generation.finish_reason,
        )
    finally:
        manager.close()
    return ExitCode.OK
