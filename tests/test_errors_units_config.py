import pytest

from shimmy.config import Paths, Settings, load_settings
from shimmy.errors import ERROR_KINDS, ExitCode, ShimmyError
from shimmy.units import format_bytes, format_count, format_gb, format_params, format_time_left


def test_error_body_has_seed_shape_plus_openai_type():
    err = ShimmyError("model_not_found", "The specified model was not found", "Model 'x'")
    assert err.to_dict() == {
        "error": {
            "code": "model_not_found",
            "message": "The specified model was not found",
            "details": "Model 'x'",
            "type": "not_found_error",
        }
    }
    assert err.status == 404
    assert err.exit_code == ExitCode.MODEL_NOT_FOUND


def test_every_seed_code_exists_with_its_status():
    expected = {
        "model_not_found": 404,
        "invalid_request": 400,
        "generation_failed": 500,
        "server_error": 500,
    }
    for code, status in expected.items():
        assert ERROR_KINDS[code].status == status


def test_unknown_code_is_a_programming_error():
    with pytest.raises(ValueError):
        ShimmyError("nope", "x")


def test_formats():
    assert format_gb(2.1 * 1024**3) == "2.1GB"
    assert format_gb(300 * 1024**2) == "300MB"
    assert format_bytes(98_800_000) == "98.8 MB"
    assert format_bytes(512) == "512 B"
    assert format_params(134_515_008) == "135M"
    assert format_params(7_240_000_000) == "7.2B"
    assert (format_count(None), format_count(40), format_count(5000)) == ("-", "40", "5.0k")
    assert format_count(1_234_567) == "1.2M"
    assert [format_time_left(s) for s in (None, 42.9, 185, 4020)] == ["--", "42s", "3:05", "1h07m"]


def test_settings_precedence_defaults_file_env_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("SHIMMY_HOME", str(tmp_path))
    paths = Paths.from_env()
    paths.config_dir.mkdir(parents=True)
    paths.config_file.write_text("port = 9000\nctx_size = 1024\nkeep_alive = 60\n")
    assert load_settings().port == 9000
    monkeypatch.setenv("SHIMMY_PORT", "9001")
    settings = load_settings()
    assert (settings.port, settings.ctx_size, settings.keep_alive) == (9001, 1024, 60.0)
    assert load_settings(port=9002, ctx_size=None).port == 9002
    assert load_settings(port=9002, ctx_size=None).ctx_size == 1024


def test_bad_config_values_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("SHIMMY_HOME", str(tmp_path))
    monkeypatch.setenv("SHIMMY_PORT", "eleven")
    with pytest.raises(ShimmyError) as err:
        load_settings()
    assert err.value.code == "invalid_request" and "port" in err.value.message
    monkeypatch.delenv("SHIMMY_PORT")
    paths = Paths.from_env()
    paths.config_dir.mkdir(parents=True)
    paths.config_file.write_text("colour = 'blue'\n")
    with pytest.raises(ShimmyError, match="Unknown setting 'colour'"):
        load_settings()


def test_model_paths_env_and_flags_add_up(tmp_path, monkeypatch):
    monkeypatch.setenv("SHIMMY_HOME", str(tmp_path))
    monkeypatch.setenv("SHIMMY_MODEL_PATHS", "/a:/b")
    assert load_settings(model_dirs=("/c",)).model_dirs == ("/a", "/b", "/c")


def test_default_threads_is_all_usable_cores():
    import os

    assert Settings().threads == min(
        len(os.sched_getaffinity(0)), __import__("psutil").cpu_count(logical=False) or 99
    )


def test_spec_flag_setting_and_variable_reach_the_engine_options(tmp_path, monkeypatch):
    from shimmy.cli import build_parser
    from shimmy.cli.settings import settings_from
    from shimmy.models.manager import ModelManager

    monkeypatch.setenv("SHIMMY_HOME", str(tmp_path))
    assert load_settings().spec is False
    monkeypatch.setenv("SHIMMY_SPEC", "true")
    assert load_settings().spec is True
    settings = settings_from(build_parser().parse_args(["serve", "--spec", "off"]))
    assert settings.spec is False
    settings = settings_from(build_parser().parse_args(["serve", "--spec", "on"]))
    manager = ModelManager(settings)
    assert manager._engine_options().spec is True
    assert manager._engine_options().draft_min == 0
    manager.close()
    # --draft-min reaches the engine, within 0..MAX_DRAFT.
    for given, used in (("4", 4), ("1000", 64), ("-3", 0)):
        args = build_parser().parse_args(["serve", "--spec", "on", "--draft-min", given])
        manager = ModelManager(settings_from(args))
        assert manager._engine_options().draft_min == used
        manager.close()


def test_cache_ram_flag_reaches_the_engine_options(tmp_path, monkeypatch):
    from shimmy.cli import build_parser
    from shimmy.cli.settings import settings_from
    from shimmy.models.manager import ModelManager

    monkeypatch.setenv("SHIMMY_HOME", str(tmp_path))
    assert load_settings().cache_ram == 1024
    settings = settings_from(build_parser().parse_args(["serve", "--cache-ram", "0"]))
    assert settings.cache_ram == 0
    manager = ModelManager(settings.with_overrides(cache_ram=64))
    assert manager._engine_options().prompt_cache_bytes == 64 * 1024 * 1024
    manager.close()
