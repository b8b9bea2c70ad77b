"""Training pauses for trackers that fell too far behind (pacing.py)."""

from __future__ import annotations

import os
import time

import pytest

from expander_sweeps.sweep.pacing import Pacer, lag_from_file, write_lag


def test_training_goes_on_within_the_limit_and_past_it_waits_until_half_of_it():
    lags = iter([10.0, 61.0, 50.0, 31.0, 30.0, 5.0])
    said, slept = [], []
    pace = Pacer(lambda: next(lags), limit=60, say=said.append, check_every=0.0, sleep=slept.append)
    pace()  # 10 s: within the limit
    assert said == [] and slept == []
    pace()  # 61 s: past it; waits through 50 and 31, goes on at 30 (half the limit)
    assert len(said) == 1 and "61.0 s" in said[0] and "max_lag_seconds = 60" in said[0]
    assert slept == [0.2, 0.2]
    pace()  # 5 s
    assert len(said) == 1


def test_the_lag_is_asked_at_most_every_check_interval():
    asked = []
    pace = Pacer(lambda: asked.append(1) or 0.0, limit=60, say=print, check_every=3600.0)
    for _ in range(1000):  # every batch of a trial
        pace()
    assert len(asked) == 1


def test_the_lag_file_carries_the_number_and_a_missing_stale_or_broken_one_means_no_lag(tmp_path):
    path = tmp_path / ".trackers-lag"
    assert lag_from_file(path) == 0.0
    write_lag(path, 75.25)
    assert lag_from_file(path) == pytest.approx(75.25)
    assert [p.name for p in tmp_path.iterdir()] == [".trackers-lag"]  # no temporary file left
    old = time.time() - 120
    os.utime(path, (old, old))  # a launch killed two minutes ago: its workers must not wait
    assert lag_from_file(path) == 0.0
    path.write_text("not a number")
    assert lag_from_file(path) == 0.0
    write_lag(path, 0.0)
    assert not path.exists()
    write_lag(path, 0.0)  # twice is fine


def test_later_pauses_are_summed_up_every_ten_minutes_not_said_each_time():
    now = [0.0]
    lag = [100.0]

    def sleep(seconds: float) -> None:  # the trackers catch up while training sleeps
        now[0] += seconds
        lag[0] = 0.0

    said = []
    pace = Pacer(lambda: lag[0], limit=60, say=said.append, check_every=0.0, sleep=sleep, clock=lambda: now[0])
    for minute in range(12):  # a pause every minute
        now[0] = 60.0 * minute
        lag[0] = 100.0
        pace()
    assert len(said) == 2 and said[0].startswith("training pauses for the trackers")
    assert said[1] == "training paused for the trackers 11 time(s), 2 s in all, in the last 600 s"
