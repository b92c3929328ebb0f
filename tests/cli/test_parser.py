"""The parser of ``shimmy``: every default comes from its one place, and the help
quotes it from there (shimmy/cli/parser.py)."""

from __future__ import annotations

import pytest

from shimmy.cli import build_parser
from shimmy.config import Settings
from shimmy.models.generation import GenerationRequest, SamplingParams


def help_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The help ``shimmy ARGV --help`` prints, one line per flag (no wrapping)."""
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([*argv, "--help"])
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")


def test_generate_defaults_are_the_engines_and_the_seeds() -> None:
    args = build_parser().parse_args(["generate"])
    given = SamplingParams(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        repeat_penalty=args.repeat_penalty,
        seed=args.seed,
    )
    assert given == SamplingParams()
    assert args.max_tokens == GenerationRequest.max_tokens
    # SEED-API.md's defaults for max_tokens and temperature.
    assert (args.max_tokens, args.temperature) == (100, 0.7)


@pytest.mark.parametrize(
    ("argv", "owner", "field", "value", "shown"),
    [
        (
            ["serve"],
            Settings,
            "request_timeout",
            123.0,
            "longest one generation may take (default 123)",
        ),
        (["serve"], Settings, "ctx_size", 2048, "context tokens per request slot (default 2048;"),
        (["probe"], Settings, "parallel", 7, "requests decoded together per model (default 7)"),
        (["generate"], Settings, "batch_size", 64, "prompt tokens decoded per step (default 64)"),
        (
            ["serve"],
            Settings,
            "cache_ram",
            256,
            "restored when they come back (default 256; 0: off)",
        ),
        (["serve"], Settings, "spec", True, "(n-gram speculative decoding; default on)"),
        (["serve"], Settings, "keep_alive", 30.0, "after this long idle (default 30; negative"),
        ([], Settings, "request_timeout", 9.5, "longest one generation may take (default 9.5)"),
        ([], Settings, "port", 8080, "embedded server address (default 127.0.0.1:8080)"),
        (["serve"], Settings, "host", "0.0.0.0", "address to listen on (default 0.0.0.0:11435)"),
        (
            ["generate"],
            GenerationRequest,
            "max_tokens",
            64,
            "maximum tokens to generate (default 64)",
        ),
        (["generate"], SamplingParams, "temperature", 0.5, "temperature (default 0.5; 0 = greedy)"),
        (["generate"], SamplingParams, "top_p", 0.9, "add up to this (default 0.9; 1: off)"),
        (["generate"], SamplingParams, "top_k", 20, "the K likeliest tokens (default 20; 0: off)"),
        (["generate"], SamplingParams, "min_p", 0.1, "of the likeliest (default 0.1; 0: off)"),
        (["generate"], SamplingParams, "repeat_penalty", 1.3, "used tokens (default 1.3; 1: off)"),
    ],
)
def test_help_quotes_the_default_from_its_one_place(
    argv: list[str],
    owner: type,
    field: str,
    value: object,
    shown: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Changing a default where it is stated (a dataclass field's default is its
    class attribute) changes the help with it."""
    assert shown not in help_of(argv, capsys)
    monkeypatch.setattr(owner, field, value)
    assert shown in help_of(argv, capsys)


def test_generate_flags_take_the_sampling_defaults_from_their_one_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(SamplingParams, "top_k", 7)
    monkeypatch.setattr(GenerationRequest, "max_tokens", 12)
    args = build_parser().parse_args(["generate"])
    assert (args.top_k, args.max_tokens) == (7, 12)


def test_the_help_shows_todays_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    serve = help_of(["serve"], capsys)
    for text in (
        "(default 127.0.0.1:11435)",
        "(default 600)",
        "(default 4096;",
        "(default 4)",
        "(default 512)",
        "(default 1024; 0: off)",
        "(default 300; negative: never)",
        "(default: all physical cores)",
    ):
        assert text in serve
    generate = help_of(["generate"], capsys)
    for text in ("(default 100)", "(default 0.7;", "(default 0.95;", "(default 40;"):
        assert text in generate
    assert "(default 0.05;" in generate and "(default 1.1;" in generate
    search = help_of(["search"], capsys)
    assert "(default 20)" in search and "(default downloads)" in search


@pytest.mark.parametrize("command", [["list"], ["diag"], ["rm", "some-model"]])
def test_model_dirs_given_before_the_command_are_kept(command: list[str]) -> None:
    """rm had a --model-dirs of its own whose default (None) reset the main parser's."""
    parser = build_parser()
    assert parser.parse_args(["--model-dirs=/a", *command]).model_dirs == ["/a"]
    assert parser.parse_args([*command, "--model-dirs", "/b"]).model_dirs == ["/b"]
    assert getattr(parser.parse_args(command), "model_dirs", None) is None
