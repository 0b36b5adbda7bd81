from experiments.peer_d3rlpy import table


def rows(impl, scores, algo="cql"):
    return [
        {"impl": impl, "algo": algo, "seed": str(i), "normalized_score": str(s)} for i, s in enumerate(scores)
    ]


def test_the_spread_rule_compares_o2o_with_d3rlpy_and_bf16_with_fp32():
    # o2o 50, 60 (mean 55, std 5); d3rlpy 48, 52 (mean 50, std 2): 5 above, passes.
    # o2o-bf16 44, 46 (mean 45, std 1) against o2o: 10 below, more than the larger std (5): fails.
    # IQL: o2o 40, 50 (45 ± 5) against d3rlpy 48, 50 (49 ± 1): 4 below but within 5: passes.
    text, verdicts = table(
        rows("o2o", [50, 60]) + rows("d3rlpy", [48, 52]) + rows("o2o-bf16", [44, 46])
        + rows("o2o", [40, 50], "iql") + rows("d3rlpy", [48, 50], "iql")
    )  # fmt: skip
    assert verdicts["cql: o2o against d3rlpy"] == {
        "difference_of_means": 5.0,
        "larger_std": 5.0,
        "within_spread_or_above": True,
    }
    assert verdicts["cql: o2o-bf16 against o2o"]["difference_of_means"] == -10.0
    assert verdicts["cql: o2o-bf16 against o2o"]["within_spread_or_above"] is False
    assert verdicts["iql: o2o against d3rlpy"]["within_spread_or_above"] is True
    assert "iql: o2o-bf16 against o2o" not in verdicts  # no bf16 rows for IQL
    assert "| cql | o2o-bf16 | 2 | 45.0 ± 1.0 | 44.0, 46.0 |" in text
