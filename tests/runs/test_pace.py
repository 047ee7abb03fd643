"""The forecast a batch launch shows before it queues (cldash.runs.pace): this machine's pace from the store's
finished runs, the shipped study's without one, the steps each configuration trains, and the words."""

import socket

import pytest

from cldash.runs.pace import START_SECONDS, STUDY_SECONDS_PER_STEP, duration, estimate, pace, tasks_of
from cldash.store import Store


def finished(store, seconds: float, steps: int, host: str | None = None, stream: str = "digits-rotate",
             tasks: int = 5) -> int:
    rid = store.create_run({"method": "lora", "stream": stream, "backbone": "vit-tiny", "seed": 0}, status="finished")
    store.update_run(rid, host=host or socket.gethostname(), started_at=100.0, finished_at=100.0 + seconds,
                     total_steps=steps, num_tasks=tasks)
    return rid


def test_the_pace_is_the_median_of_this_machines_finished_runs_else_the_shipped_studys(db):
    store = Store(db)
    assert pace(store) == (STUDY_SECONDS_PER_STEP, "the shipped claims study's pace (0.0236 s a step on 2 CPU "
                                                   "cores); this store has no finished run of this machine of 100 "
                                                   "steps or more yet")
    finished(store, 500.0, 100, host="another-node")   # another machine's pace says nothing about this one
    finished(store, 2.0, 10)          # nor does a 10-step run's, which is mostly its evaluations
    assert pace(store)[0] == STUDY_SECONDS_PER_STEP
    for seconds in (10.0, 20.0, 90.0):
        finished(store, seconds, 1000)
    assert pace(store) == (0.02, "the pace of the 3 newest finished runs of this machine in this store "
                                 "(0.02 s a step)")


@pytest.mark.parametrize(("config", "tasks"), [
    ({"stream": "digits-rotate", "stream_options": {"angles": [90, 180]}}, 2),
    ({"stream": "digits-permute", "stream_options": {"tasks": 7}}, 7),
    ({"stream": "cifar100-10", "stream_options": {}}, 10),          # a stored run's count for its stream
    ({"stream": "digits-split", "stream_options": {"evaluation": "class-il"}}, 5)])   # the built-ins' default
def test_the_tasks_a_configuration_trains(config, tasks):
    assert tasks_of(config, {"cifar100-10": 10}) == tasks


def test_the_estimate_adds_every_runs_steps_and_start_and_shares_them_over_the_slots(db):
    store = Store(db)
    store.set_setting("max_concurrent", "2")
    finished(store, 20.0, 1000)                                   # 0.02 s a step
    configs = [{"stream": "digits-rotate", "steps_per_task": 100, "stream_options": {"angles": [1, 2, 3]}}] * 4
    e = estimate(store, configs)
    assert (e.runs, e.steps, e.at_once, e.per_step) == (4, 1200, 2, 0.02)
    assert e.seconds == pytest.approx((1200 * 0.02 + 4 * START_SECONDS) / 2)
    assert e.text() == "4 runs (1,200 steps), about 20 s on this machine, 2 at a time"
    one = estimate(store, configs[:1])
    assert one.at_once == 1 and one.text().startswith("1 run (300 steps)")   # one run uses one slot


@pytest.mark.parametrize(("seconds", "words"), [(0.2, "1 s"), (3.4, "3 s"), (44, "40 s"), (95, "2 min"),
                                                (3599, "1 h 00 min"), (7800, "2 h 10 min")])
def test_a_forecasts_length_in_words(seconds, words):
    assert duration(seconds) == words
