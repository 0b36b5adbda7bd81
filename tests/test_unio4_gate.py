"""experiments/unio4_gate.py's count of the AM-Q gate's decisions against real returns, by hand."""

from experiments.unio4_gate import summarise


def row(gate, member, accepted, candidate, behaviour, amq_best=0.0, arm="fixed", seed=0):
    return {
        "seed": str(seed), "arm": arm, "gate": str(gate), "member": str(member), "amq": "0",
        "amq_best": str(amq_best), "accepted": "" if gate == 0 else str(accepted),
        "candidate": str(candidate), "behaviour": str(behaviour),
    }  # fmt: skip


def test_the_gate_audit_counts_accepted_steps_that_lowered_the_real_score():
    rows = [
        row(0, 0, "", 10, 10), row(0, 1, "", 12, 12),  # the BC members
        row(1, 0, 1, 8, 10),  # accepted, and the real score fell: 10 -> 8
        row(1, 1, 0, 15, 12),  # rejected a step that would have raised it
        row(2, 0, 0, 5, 8, amq_best=3.0),  # rejected, rightly
        row(2, 1, 1, 13, 12, amq_best=4.0),  # accepted, raised; the best AM-Q: the policy fine-tuned
        row(0, 0, "", 10, 10, arm="before"), row(1, 0, 0, 11, 10, arm="before"),
    ]  # fmt: skip
    summary = summarise(rows)
    fixed = summary["fixed"]
    assert (fixed["decisions"], fixed["accepted"], fixed["accept_rate"]) == (4, 2, 0.5)
    assert (fixed["accepted_lowering"], fixed["lowering_share_of_accepted"]) == (1, 0.5)
    assert fixed["rejected_raising"] == 1
    assert (fixed["bc_best_score"], fixed["final_score"]) == (12.0, 13.0)  # member 1, accepted at gate 2
    before = summary["before"]
    assert (before["accepted"], before["rejected_raising"], before["final_score"]) == (0, 1, 10.0)
