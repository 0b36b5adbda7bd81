import importlib.util

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("collect_runs", REPO / "experiments/collect_runs.py")
collect_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(collect_runs)


def _run(root, name, agent, dataset, seed, finished=True):
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(
        f"agent:\n  name: {agent}\ndataset:\n  name: {dataset}\nseed: {seed}\n"
    )
    (run / "metrics.csv").write_text(
        "step,phase,env_steps,metric,value\n"
        "500,offline,0,critic_loss,1.5\n"
        "500,offline,0,eval_return,120.0\n"
        "500,offline,0,normalized_score,5.5\n"
        "600,online,100,amq_0,57.0\n"
    )
    (run / "checkpoints").mkdir()
    if finished:
        (run / "checkpoints" / "agent_final.pt").write_bytes(b"")
    return run


def test_collects_config_and_evaluation_rows_of_finished_runs_only(tmp_path, capsys):
    sweep, out = tmp_path / "sweep", tmp_path / "results" / "runs"
    _run(sweep, "+experiment=x,seed=0", "iql", "hopper-medium", 0)
    unfinished = _run(sweep, "+experiment=x,seed=1", "iql", "hopper-medium", 1, finished=False)

    assert collect_runs.main([str(sweep), str(out), "--metrics", "amq_"]) == 0

    assert sorted(p.name for p in out.iterdir()) == ["iql_hopper-medium_s0"]
    copied = out / "iql_hopper-medium_s0"
    assert (copied / ".hydra" / "config.yaml").read_text().startswith("agent:\n  name: iql")
    assert (copied / "metrics.csv").read_text().splitlines() == [
        "step,phase,env_steps,metric,value",
        "500,offline,0,eval_return,120.0",
        "500,offline,0,normalized_score,5.5",
        "600,online,100,amq_0,57.0",
    ]
    assert f"unfinished, not copied: {unfinished}" in capsys.readouterr().out


def test_a_missing_sweep_directory_is_refused(tmp_path, capsys):
    assert collect_runs.main([str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "is not a directory" in capsys.readouterr().err
