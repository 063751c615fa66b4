"""Shared fixtures: the real frozen graphs of the shared models folder (never copied into the repository).

The folder is `$TB_UNFREEZE_MODELS`, by default `<repo>/../shared/models`. Tests that need it are skipped,
with the reason, when it is absent. In CI (`CI=true`, set by .ci/run) such a skip fails the run: only the
reasons in `DOCUMENTED_SKIPS` (root-only cases, opt-in slow tests) may skip there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS_DIR = os.environ.get("TB_UNFREEZE_MODELS") or os.path.join(os.path.dirname(REPO), "shared", "models")


@pytest.fixture(scope="session")
def real_models_dir() -> str:
    """The shared models folder; skips the test if it is not there."""
    if not os.path.isdir(MODELS_DIR):
        pytest.skip(f"shared models folder {MODELS_DIR} is absent; set TB_UNFREEZE_MODELS to a copy of it")
    return MODELS_DIR


@pytest.fixture(scope="session")
def real_model(real_models_dir: str) -> Callable[[str], str]:
    """`real_model("tf2onnx_regression.pb")` -> path of that file in the models folder (skips if missing)."""

    def find(name: str) -> str:
        for sub in ("real", "not_frozen", ""):
            path = os.path.join(real_models_dir, sub, name)
            if os.path.isfile(path) or os.path.isdir(path):
                return path
        pytest.skip(f"model {name} is not in {real_models_dir}")

    return find


# --- model listings for parametrization (collected at import time, so new files in the folders are covered) ---

NON_MODEL_SUFFIXES = (".tsv", ".md", ".txt", ".json", ".csv")


def model_entries(sub: str) -> list:
    """`pytest.param(path, id=name)` for every entry of `<models>/<sub>/` except the notes (SOURCES.tsv, ...).

    When the folder is absent, one parameter that skips with the reason, so the test is reported, not lost.
    """
    folder = os.path.join(MODELS_DIR, sub)
    if not os.path.isdir(folder):
        return [
            pytest.param(
                None,
                id=f"no-{sub}",
                marks=pytest.mark.skip(
                    reason=f"shared models folder {folder} is absent; set TB_UNFREEZE_MODELS to a copy of the "
                    "models folder"
                ),
            )
        ]
    return [
        pytest.param(os.path.join(folder, name), id=name)
        for name in sorted(os.listdir(folder))
        if not name.startswith(".") and not name.endswith(NON_MODEL_SUFFIXES)
    ]


# --- the source models are never modified (docs/reliability.md) ---


def _models_state(full: bool) -> dict:
    """Every file under the models folder: sha256 (full) or (size, mtime_ns) (cheap, checked around each test)."""
    import hashlib

    state = {}
    for dirpath, _, filenames in os.walk(MODELS_DIR):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if full:
                with open(path, "rb") as f:
                    state[path] = hashlib.sha256(f.read()).hexdigest()
            else:
                st = os.stat(path)
                state[path] = (st.st_size, st.st_mtime_ns)
    return state


@pytest.fixture(scope="session", autouse=True)
def source_models_unchanged():
    """sha256 of every shared model before the session and after it: no test may write to a source model."""
    if not os.path.isdir(MODELS_DIR):
        yield
        return
    before = _models_state(full=True)
    yield
    after = _models_state(full=True)
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert not changed, f"the test session modified source models: {changed[:5]}"


@pytest.fixture(autouse=True)
def source_models_untouched_by_this_test(request):
    """The cheap per-test check (size and mtime), so a failure names the test that wrote a model."""
    if not os.path.isdir(MODELS_DIR):
        yield
        return
    before = _models_state(full=False)
    yield
    after = _models_state(full=False)
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert not changed, f"{request.node.nodeid} modified source models: {changed[:5]}"


def installed_command(name: str) -> str:
    """The console script `name` of the environment these tests run in (beside `sys.executable`), so the tests
    exercise what `pip install` put there, whatever is (not) on PATH. Fails, never skips, when it is missing."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    if not os.access(path, os.X_OK):
        pytest.fail(f"the '{name}' command is not installed beside {sys.executable}; run `make setup`")
    return path


# --- in CI (CI=true), a skip is a failure unless it is for a documented reason ---

# reason -> text its skip message contains. Anything else skipped in CI (a missing tool, package, model or
# browser) fails the run: CI must exercise what the README promises, not report it skipped.
DOCUMENTED_SKIPS = {
    "root-only: the full-disk tests mount a 512 KB tmpfs": "cannot mount a small tmpfs",
    "not as root: root reads every file, so the unreadable-file case cannot be made": "running as root: every file",
    "opt-in slow test (TB_UNFREEZE_SLOW_TESTS=1)": "TB_UNFREEZE_SLOW_TESTS",
}


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _undocumented_skip(report) -> str | None:
    """The reason of a skip that CI does not allow, or None."""
    if os.environ.get("CI", "").lower() != "true" or not report.skipped or hasattr(report, "wasxfail"):
        return None
    reason = _skip_reason(report)
    return None if any(text in reason for text in DOCUMENTED_SKIPS.values()) else reason


_ALLOWED = f"allowed: {'; '.join(DOCUMENTED_SKIPS)} (tests/conftest.py DOCUMENTED_SKIPS)"
_SKIPPED_MODULES: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    reason = _undocumented_skip(report)
    if reason is not None:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true) for a reason not documented as allowed: {reason}\n{_ALLOWED}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """Module-level skips (`pytest.importorskip` at import) happen at collection: recorded, and they fail the run
    at its end (failing the collection itself would stop every other test)."""
    outcome = yield
    reason = _undocumented_skip(outcome.get_result())
    if reason is not None:
        _SKIPPED_MODULES.append(f"{collector.nodeid}: {reason}")


def pytest_terminal_summary(terminalreporter):
    if _SKIPPED_MODULES:
        terminalreporter.section("modules skipped in CI for a reason not documented as allowed")
        for line in _SKIPPED_MODULES:
            terminalreporter.write_line(line)
        terminalreporter.write_line(_ALLOWED)


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED_MODULES and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
