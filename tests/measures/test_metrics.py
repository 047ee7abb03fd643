"""Metrics against matrices computed by hand (reference note baseline-methods.md, section 6)."""

import math

import numpy as np
import pytest

from cldash.measures import metrics as M

# T = 3. Row 0 is the pre-trained model; row i is after training task i.
R3 = np.array([
    [0.10, 0.20, 0.30],
    [0.90, 0.40, 0.35],
    [0.60, 0.80, 0.50],
    [0.50, 0.70, 0.95],
])


def test_final_average_accuracy():
    assert M.final_average_accuracy(R3) == pytest.approx((0.50 + 0.70 + 0.95) / 3)


def test_average_incremental_accuracy():
    acc1 = 0.90
    acc2 = (0.60 + 0.80) / 2
    acc3 = (0.50 + 0.70 + 0.95) / 3
    assert M.average_incremental_accuracy(R3) == pytest.approx((acc1 + acc2 + acc3) / 3)


def test_backward_transfer():
    # (R[3][1] - R[1][1] + R[3][2] - R[2][2]) / 2
    assert M.backward_transfer(R3) == pytest.approx(((0.50 - 0.90) + (0.70 - 0.80)) / 2)


def test_trace_backward_transfer_is_scaled_gem_bwt():
    assert M.trace_backward_transfer(R3) == pytest.approx(((0.50 - 0.90) + (0.70 - 0.80) + 0.0) / 3)
    assert M.trace_backward_transfer(R3) == pytest.approx(M.backward_transfer(R3) * 2 / 3)


def test_forward_transfer():
    # (R[1][2] - R[0][2] + R[2][3] - R[0][3]) / 2
    assert M.forward_transfer(R3) == pytest.approx(((0.40 - 0.20) + (0.50 - 0.30)) / 2)


def test_forgetting_takes_the_best_score_after_learning():
    # task 1: max(R[1][1], R[2][1]) = 0.90 -> 0.90 - 0.50; task 2: max(R[2][2]) = 0.80 -> 0.80 - 0.70
    assert M.forgetting(R3) == pytest.approx(((0.90 - 0.50) + (0.80 - 0.70)) / 2)
    # a task that improves after being learned: the max picks the later, better row
    R = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.8, 0.6, 0.0], [0.7, 0.6, 0.9]])
    assert M.forgetting(R) == pytest.approx(((0.8 - 0.7) + (0.6 - 0.6)) / 2)


def test_learning_accuracy():
    assert M.learning_accuracy(R3) == pytest.approx((0.90 + 0.80 + 0.95) / 3)


def test_mtil_metrics():
    # Transfer: column 2 rows 1..1 -> 0.40; column 3 rows 1..2 -> (0.35 + 0.50) / 2
    assert M.mtil_transfer(R3) == pytest.approx((0.40 + (0.35 + 0.50) / 2) / 2)
    assert M.mtil_average(R3) == pytest.approx(R3[1:].mean())
    assert M.final_average_accuracy(R3) == pytest.approx(R3[3].mean())   # MTIL Last = ACC


def test_one_task_leaves_transfer_metrics_undefined():
    R = np.array([[0.2], [0.9]])
    assert M.final_average_accuracy(R) == pytest.approx(0.9)
    assert M.learning_accuracy(R) == pytest.approx(0.9)
    assert M.average_incremental_accuracy(R) == pytest.approx(0.9)
    assert M.trace_backward_transfer(R) == pytest.approx(0.0)
    for f in (M.backward_transfer, M.forward_transfer, M.forgetting, M.mtil_transfer):
        assert math.isnan(f(R))


def test_zero_scores():
    R = np.zeros((4, 3))
    s = M.summarize(R, {"general": [0.0, 0.0, 0.0, 0.0]})
    assert s["acc"] == 0.0 and s["bwt"] == 0.0 and s["forgetting"] == 0.0 and s["fwt"] == 0.0
    assert math.isnan(s["general_retention"])       # no baseline score to retain
    assert s["general_delta"] == 0.0


def test_general_retention_and_summary_keys():
    s = M.summarize(R3, {"upright": [0.95, 0.80, 0.70, 0.475]})
    assert s["general"] == pytest.approx(0.475)
    assert s["general_retention"] == pytest.approx(0.5)
    assert s["general_delta"] == pytest.approx(0.475 - 0.95)
    assert set(s) == {m.key for m in M.METRICS} | {"general:upright", "general_retention:upright"}


def test_metrics_after_each_task_are_those_of_the_tasks_seen_so_far():
    general = {"upright": [0.95, 0.80, 0.70, 0.475]}
    after = M.after_each_task(R3, general)
    assert len(after) == 3 and after[-1] == M.summarize(R3, general)
    # after task 1: one task seen, R[1][1] = 0.90; nothing to forget yet
    assert after[0]["acc"] == pytest.approx(0.90) and math.isnan(after[0]["bwt"])
    assert after[0]["general_retention"] == pytest.approx(0.80 / 0.95)
    # after task 2: the last row (0.60, 0.80); task 1 lost 0.90 - 0.60
    assert after[1]["acc"] == pytest.approx(0.70) and after[1]["forgetting"] == pytest.approx(0.30)
    assert after[1]["la"] == pytest.approx((0.90 + 0.80) / 2) and after[1]["fwt"] == pytest.approx(0.40 - 0.20)
    # a run still going: rows 0..2 of 3 tasks give the first two task ends
    assert M.after_each_task(R3[:3], general) == after[:2]
    with pytest.raises(ValueError, match="shape"):
        M.after_each_task(np.zeros((5, 3)))


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        M.final_average_accuracy(np.zeros((3, 3)))


def test_per_general_task_scores_and_retention():
    R = np.array([[0.0, 0.0], [0.8, 0.1], [0.3, 0.9]])
    general = {"general: pre-training": [0.96, 0.5, 0.48], "in-context": [0.5, 0.5, 0.0]}
    s = M.summarize(R, general)
    assert s["general:general: pre-training"] == pytest.approx(0.48)
    assert s["general_retention:general: pre-training"] == pytest.approx(0.5)
    assert s["general_retention:in-context"] == pytest.approx(0.0)
    assert s["general_retention"] == pytest.approx(0.25)          # the mean of the two
    # TRACE's BWT over T = 2 tasks: ((0.3 - 0.8) + (0.9 - 0.9)) / 2; OP = ACC = mean of the last row
    assert s["trace_bwt"] == pytest.approx(-0.25) and s["acc"] == pytest.approx(0.6)
    assert s["forgetting"] == pytest.approx(0.5)
