"""`shimmy generate` knows which sampling flags were given: a model preset's
defaults fill only the others (shimmy/models/presets.py)."""

from __future__ import annotations

from shimmy.cli.generate import SAMPLED_FLAGS
from shimmy.cli.parser import build_parser


def test_given_sampling_flags_are_noted() -> None:
    args = build_parser().parse_args(["generate", "--top-k", "3", "--temperature", "0.7"])
    assert args.given == {"top_k", "temperature"}  # 0.7 is the default, but it was said
    assert args.top_k == 3


def test_no_flags_leave_every_sampling_field_to_a_preset() -> None:
    args = build_parser().parse_args(["generate"])
    assert SAMPLED_FLAGS - getattr(args, "given", frozenset()) == SAMPLED_FLAGS
