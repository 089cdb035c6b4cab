"""Age metrics: overall MAE, per-group MAE and bias, CS@5, spread, fairness gap."""
import math

import numpy as np
import pytest
import torch

from ab.nn import registry
from ab.nn.metric._age import AGE_GROUPS, age_statistics, group_of


def test_groups_are_the_ten_caf_groups():
    assert [g[0] for g in AGE_GROUPS] == ["0-2", "3-6", "7-9", "10-14", "15-19", "20-29", "30-39", "40-49",
                                          "50-69", "70+"]
    assert group_of(np.array([0, 2.9, 3, 9, 10, 19, 20, 69, 70, 116])).tolist() == [0, 0, 1, 2, 3, 4, 5, 8, 9, 9]


def test_statistics_by_hand():
    true = np.array([1, 2, 25, 35, 80])
    predicted = np.array([4, 2, 20, 35, 90])
    stats = age_statistics(predicted, true)
    assert stats["mae"] == pytest.approx((3 + 0 + 5 + 0 + 10) / 5)
    assert stats["bias"] == pytest.approx((3 + 0 - 5 + 0 + 10) / 5)
    assert stats["cs5"] == pytest.approx(4 / 5)
    assert stats["mae@0-2"] == 1.5 and stats["bias@0-2"] == 1.5 and stats["n@0-2"] == 2
    assert stats["mae@70+"] == 10 and stats["mae@30-39"] == 0
    assert stats["fairness_gap"] == 10 and "mae@3-6" not in stats
    assert stats["error_std"] == pytest.approx(np.std([3, 0, -5, 0, 10]))


def test_metric_modules_follow_the_contract():
    mae = registry.load(registry.METRIC, "mae").create_metric((1,))
    groups = registry.load(registry.METRIC, "age-groups").create_metric((1,))
    outputs, labels = torch.tensor([[10.0], [30.0]]), torch.tensor([[12.0], [30.0]])
    for metric in (mae, groups):
        metric.reset()
        metric(outputs, labels)
    assert mae.values()["mae"] == 1.0 and mae.result() == pytest.approx(1 - 1 / 20)
    assert groups.result() == 1.0 and groups.values()["mae@10-14"] == 2.0
    mae.reset()
    assert mae.result() == 0.0 and math.isinf(mae.values()["mae"])
    mae(torch.tensor([[float("nan")]]), torch.tensor([[3.0]]))
    assert mae.result() == 0.0
