"""The real ModelManager and the dashboard's fakes are both what the dashboard
takes, a DashboardBackend. The typed assignments below are the check: mypy reads
them (scripts/test runs it over tests/tui), so a fake that drifts from the real
manager, or a manager that drops something the dashboard calls, fails there.
At run time the same objects must have every member the Protocol names."""

from __future__ import annotations

from pathlib import Path

from shimmy.config import Settings
from shimmy.models.manager import ModelManager
from shimmy.tui.backend import DashboardBackend
from tests.tui.fakes import FakeManager


def test_the_real_manager_is_a_dashboard_backend(isolated_home: Path) -> None:
    manager = ModelManager(Settings(keep_alive=-1, preload=False))
    try:
        backend: DashboardBackend = manager
        assert isinstance(backend, DashboardBackend)
        assert backend.loaded_names() == []
    finally:
        manager.close()


def test_the_fake_manager_is_a_dashboard_backend() -> None:
    backend: DashboardBackend = FakeManager()
    assert isinstance(backend, DashboardBackend)
    assert backend.loaded_names() == ["smollm2-135m-instruct-q4_1"]
