"""Figure builders are pure functions: check the numbers they put on screen."""

import numpy as np
import pandas as pd
import pytest

from cldash import figures as F

M = {"R": np.array([[0.1, 0.2], [0.9, 0.3], [0.5, 0.8]]), "general": {"upright": [0.95, 0.7, 0.6]},
     "rows": [0, 1, 2], "tasks": ["rotate 45", "rotate 90"], "metric": "accuracy"}


def test_downsample_keeps_size_bounded_and_means():
    df = pd.DataFrame({"step": np.arange(1, 10001), "value": np.arange(1, 10001, dtype=float), "label": "a"})
    out = F.downsample(df, max_points=100, by="label")
    assert len(out) == 100
    assert out.step.iloc[-1] == 10000                      # the last point stays where it was
    assert out.value.iloc[0] == pytest.approx(50.5)        # mean of the first bucket (1..100)
    small = df.head(50)
    assert F.downsample(small, max_points=100).equals(small)


def test_accuracy_matrix_figure_shows_R_with_general_column():
    fig = F.accuracy_matrix_figure(M, title="x")
    (hm,) = fig.data
    np.testing.assert_allclose(np.array(hm.z, dtype=float), np.column_stack([M["R"], [0.95, 0.7, 0.6]]))
    assert list(hm.y) == ["before", "after T1", "after T2"]
    assert list(hm.x) == ["T1", "T2", "general"]
    assert (hm.zmin, hm.zmax) == (0.0, 1.0)
    assert hm.text[1][0] == "0.90"


def test_difference_is_a_minus_b_on_a_symmetric_scale():
    B = {**M, "R": M["R"] - 0.1, "general": {"upright": [0.95, 0.8, 0.6]}}
    (hm,) = F.matrix_difference_figure(M, B).data
    z = np.array(hm.z, dtype=float)
    np.testing.assert_allclose(z[:, :2], 0.1)
    assert z[1, 2] == pytest.approx(-0.1)
    assert hm.zmin == -hm.zmax and hm.zmax == pytest.approx(0.1)
    with pytest.raises(ValueError, match="different task lists"):
        F.matrix_difference_figure(M, {**M, "tasks": ["a", "b"]})


def test_pareto_front_keeps_the_non_dominated_runs():
    t = pd.DataFrame({"forgetting": [0.1, 0.2, 0.3, 0.15], "acc": [0.5, 0.7, 0.6, 0.4], "label": list("abcd")})
    front = F.pareto_front(t, "forgetting", "acc")
    assert front.label.tolist() == ["a", "b"]
    fig = F.pareto_figure(t)
    assert [tr.name for tr in fig.data] == ["a", "b", "c", "d", "Pareto front"]


def test_spectrum_heatmap_is_log10_sigma_by_step_and_capped():
    s = pd.DataFrame({"step": [10, 20, 30], "values": [np.array([4.0, 1.0]), np.array([8.0, 2.0, 0.5]),
                                                          np.array([10.0])]})
    (hm,) = F.spectrum_heatmap(s).data
    z = np.array(hm.z, dtype=float)
    assert z.shape == (3, 3)
    assert z[0, 1] == pytest.approx(np.log10(8.0)) and np.isnan(z[2, 0]) and np.isnan(z[1, 2])
    many = pd.DataFrame({"step": np.arange(1000), "values": [np.ones(4)] * 1000})
    assert len(F.spectrum_heatmap(many, max_columns=50).data[0].x) == 50


def test_layer_module_grid_and_measures():
    df = pd.DataFrame({"layer": [0, 0, 1, 1], "module_type": ["q", "v", "q", "v"], "erank": [1.0, 2.0, 3.0, 4.0]})
    (hm,) = F.layer_module_heatmap(df, "erank").data
    np.testing.assert_allclose(np.array(hm.z, dtype=float), [[1, 2], [3, 4]])
    assert list(hm.x) == ["q", "v"] and list(hm.y) == ["layer 0", "layer 1"]
    sp = pd.DataFrame({"step": [1, 2, 1, 2], "label": ["a", "a", "b", "b"], "erank": [1, 2, 3, 4.0],
                       "frobenius": [1, 1, 2, 2.0]})
    fig = F.measures_figure(sp, ["erank", "frobenius"])
    assert len(fig.data) == 4 and sum(tr.showlegend for tr in fig.data) == 2


def test_spectrum_overlay_normalises_by_the_top_value():
    fig = F.spectrum_overlay({"lora": np.array([4.0, 2.0, 0.0]), "full": np.array([3.0, 3.0])}, normalize=True)
    assert list(fig.data[0].y) == [1.0, 0.5] and list(fig.data[1].y) == [1.0, 1.0]


def test_a_fork_s_matrix_has_a_line_under_its_fork_row_and_a_note():
    fig = F.accuracy_matrix_figure(M, fork_after=1, fork_note="fork of #3 after task 1")
    (line,) = fig.layout.shapes
    assert (line.y0, line.y1, line.x0, line.x1) == (1.5, 1.5, -0.5, 2.5)   # between 'after T1' and 'after T2'
    (note,) = fig.layout.annotations
    assert note.text == "fork of #3 after task 1" and note.y == 1.5
    assert not F.accuracy_matrix_figure(M).layout.shapes
    assert not F.accuracy_matrix_figure({**M, "R": M["R"][:1], "rows": [0], "general": {"upright": [0.95]}},
                                        fork_after=1).layout.shapes   # a fork with no row 1 yet: no line
    assert F.accuracy_matrix_figure(M, fork_after=2).layout.annotations[0].text == "fork after task 2"
