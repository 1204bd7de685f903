"""The end-of-run leak check fails a run that leaves a pipe, a child or a server behind."""

from __future__ import annotations

import pytest

from tests.harness.leaks import ROOT

LEAKY_TESTS = {
    "a pipe never read or closed": """
import subprocess
kept = []
def test_leaks():
    proc = subprocess.Popen(["true"], stdout=subprocess.PIPE)
    proc.wait()
    kept.append(proc)  # alive until the end: its stdout pipe stays open
""",
    "a child never reaped": """
import subprocess
kept = []
def test_leaks():
    kept.append(subprocess.Popen(["sleep", "30"]))
""",
}


@pytest.mark.parametrize("source", LEAKY_TESTS.values(), ids=LEAKY_TESTS.keys())
def test_a_leaking_run_fails(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the inner run imports tests.harness.leaks
    pytester.makepyfile(test_leaky=source)
    result = pytester.runpytest_subprocess(
        "-p", "tests.harness.leaks", "-p", "no:cacheprovider", "-W", "error",
        f"--rootdir={pytester.path}",
    )  # fmt: skip
    result.stdout.fnmatch_lines(["*the test harness leaked:*"])
    assert result.ret != 0


def test_a_clean_run_passes(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(
        test_clean="""
import subprocess
def test_clean():
    with subprocess.Popen(["true"], stdout=subprocess.PIPE) as proc:
        proc.communicate()
"""
    )
    result = pytester.runpytest_subprocess("-p", "tests.harness.leaks", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
