"""Settings and the process's thread budget."""

from __future__ import annotations

import os

import pytest

from personalizer.config import THREADS_ENV, cpu_threads


def test_thread_budget_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THREADS_ENV, "3")
    assert cpu_threads() == 3
    monkeypatch.delenv(THREADS_ENV)
    assert 1 <= cpu_threads() <= (os.cpu_count() or 1)


@pytest.mark.parametrize("value", ["two", "0", "-1"])
def test_a_bad_thread_budget_is_named(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(THREADS_ENV, value)
    with pytest.raises(ValueError, match=f"{THREADS_ENV}.*{value}"):
        cpu_threads()
