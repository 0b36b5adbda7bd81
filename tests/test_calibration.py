import csv

import pytest

from rl import calibration
from rl.calibration import CalibrationRule, calibration_points, first_warm_step, offline_series


def _write_run(run_dir, q_by_step, mc_by_step, online=()):
    """A run directory as rl.train leaves it: metrics.csv in long form and a resolved config."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("agent: {name: cql}\n")
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["step", "phase", "env_steps", "metric", "value"])
        for step in sorted(q_by_step):
            rows.writerow([step, "offline", 0, "q_mean", q_by_step[step]])
            rows.writerow([step, "offline", 0, "mc_return_mean", mc_by_step[step]])
            rows.writerow([step, "offline", 0, "td_loss", 1.0])
        for step, q in online:  # online rows never count: the rule is about the pre-training
            rows.writerow([step, "online", step, "q_mean", q])
    return run_dir / "metrics.csv"


def test_the_warm_step_is_the_first_window_near_the_return_that_stopped_moving(tmp_path):
    # Logged every 10 steps, windows of 20: each window's mean is the mean of its two logged values.
    # Q by window (two runs averaged): 10, 80, 95, 97, 97.5 against a return of 100 throughout.
    run_a = {10: 9, 20: 11, 30: 79, 40: 81, 50: 94, 60: 96, 70: 96, 80: 98, 90: 97, 100: 98}
    run_b = {10: 9, 20: 11, 30: 79, 40: 81, 50: 94, 60: 96, 70: 96, 80: 98, 90: 97, 100: 98}
    mc = dict.fromkeys(run_a, 100.0)
    series = [
        offline_series(_write_run(tmp_path / "a", run_a, mc, online=[(110, 500.0)])),
        offline_series(_write_run(tmp_path / "b", run_b, mc)),
    ]
    points = calibration_points(series, CalibrationRule(window=20, every=20, within=0.1, moved=0.05))
    assert points["step"].tolist() == [20, 40, 60, 80, 100]
    assert points["q_mean"].tolist() == pytest.approx([10, 80, 95, 97, 97.5])
    # 80: 20% from the return (too far); 95: 5% from it but moved 18.75% (80 -> 95); 97: moved 2.1%.
    assert points["gap"].tolist() == pytest.approx([0.9, 0.2, 0.05, 0.03, 0.025])
    assert points["moved"].tolist()[1:] == pytest.approx([7.0, 0.1875, 2 / 95, 0.5 / 97])
    assert first_warm_step(points) == 80


def test_a_critic_that_never_settles_is_not_warm(tmp_path):
    q = {step: float(step) for step in range(10, 101, 10)}  # keeps climbing through the return
    series = [offline_series(_write_run(tmp_path / "a", q, dict.fromkeys(q, 100.0)))]
    points = calibration_points(series, CalibrationRule(window=20, every=20, within=0.25, moved=0.05))
    assert first_warm_step(points) is None
    assert not points["warm"].any()


def test_the_command_writes_the_plot_and_the_verdict(tmp_path, capsys):
    q = {10: 50.0, 20: 90.0, 30: 99.0, 40: 100.0}
    _write_run(tmp_path / "runs" / "s0", q, dict.fromkeys(q, 100.0))
    out = tmp_path / "out"
    argv = [
        str(tmp_path / "runs"),
        "--window",
        "10",
        "--within",
        "0.05",
        "--moved",
        "0.05",
        "--out",
        str(out),
    ]
    assert calibration.main(argv) == 0
    assert (out / "calibration.png").stat().st_size > 0
    assert "**Warm at step 40**" in (out / "calibration.md").read_text()  # 99 moved 10% from 90
    assert "Warm at step 40" in capsys.readouterr().out


def test_a_run_without_the_critics_metrics_is_refused_in_one_line(tmp_path, capsys):
    run = tmp_path / "runs" / "s0"
    metrics = _write_run(run, {10: 1.0}, {10: 1.0})
    metrics.write_text("step,phase,env_steps,metric,value\n10,offline,0,td_loss,1.0\n")
    assert (
        calibration.main([str(tmp_path / "runs"), "--window", "10", "--within", "0.1", "--moved", "0.1"]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "metrics.csv" in err and "q_mean" in err and "mc_return_mean" in err


def test_a_rule_without_a_positive_window_is_refused():
    with pytest.raises(ValueError, match="window and every must be positive"):
        CalibrationRule(window=0, every=10, within=0.1, moved=0.1)
