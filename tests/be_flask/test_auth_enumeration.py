"""Unknown user and wrong password look the same: status, body and time."""

from __future__ import annotations

import statistics
import time

import pytest
from flask.testing import FlaskClient

from tests.harness.app import login

TRIES = 100


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_unknown_user_and_wrong_password_are_indistinguishable(client: FlaskClient) -> None:
    timings: dict[str, list[float]] = {"unknown": [], "wrong": []}
    answers = set()
    for i in range(TRIES):
        # Interleaved, so that any drift of the machine hits both series alike.
        for kind, username in (("unknown", f"nobody-{i}"), ("wrong", "admin")):
            started = time.perf_counter()
            response = login(client, username, "not the password at all")
            timings[kind].append(time.perf_counter() - started)
            answers.add((response.status_code, response.get_data(as_text=True)))
    assert len(answers) == 1, answers
    assert next(iter(answers))[0] == 401
    unknown, wrong = statistics.median(timings["unknown"]), statistics.median(timings["wrong"])
    assert abs(unknown - wrong) / max(unknown, wrong) < 0.10, (unknown, wrong)
