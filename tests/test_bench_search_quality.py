"""The search-quality benchmark measures against a true optimum: its surrogate's stated
optimum is a lower bound that the surrogate reaches."""

from __future__ import annotations

import math
import random
import sys

import yaml
from conftest import REPO

from sweeper import space as sp

sys.path.insert(0, str(REPO / "bench"))
import search_quality as bench  # noqa: E402


def test_the_surrogate_optimum_bounds_every_point_and_is_reached():
    cfg = yaml.safe_load((REPO / "bench" / "search_quality.yaml").read_text())
    space, problems = sp.build_space(cfg["parameters"], "bench")
    assert not problems
    optimum = bench.surrogate_optimum(space)
    rng = random.Random(0)
    lowest = math.inf
    for _ in range(5000):
        params = {}
        for name, dist in space.distributions.items():
            if isinstance(dist, sp.CategoricalDistribution):
                params[name] = rng.choice(dist.choices)
            else:
                params[name] = math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
        value = bench.surrogate(space.values(params))
        assert value >= optimum - 1e-12
        lowest = min(lowest, value)
    assert lowest - optimum < 0.002, "random points come near the stated optimum"


def test_hyperband_curves_end_at_the_surrogate_value_from_above():
    values = {"lr": 3e-4, "kl_weight": 1e-6, "channels": [32, 64, 64], "num_res_blocks": 1}
    curve = bench.surrogate_curve(values, 30)
    assert all(a > b for a, b in zip(curve, curve[1:], strict=False))
    assert curve[-1] > bench.surrogate(values)
