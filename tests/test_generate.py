"""Dataset generation through minari's writer, with behaviour policies exported from SAC checkpoints."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import rl.generate.locomotion as gen
from rl.agents.sac import SAC, SACConfig
from rl.checkpoint import load_checkpoint, save_checkpoint
from rl.data import load_dataset


@pytest.fixture
def behaviour_dir(tmp_path, monkeypatch, minari_store):
    """Two (untrained, differently seeded) SAC policies exported as 'medium' and 'expert'."""
    for level, seed in (("medium", 0), ("expert", 1)):
        torch.manual_seed(seed)
        cfg = SACConfig(actor_hidden=[16, 16])
        agent = SAC(cfg, 11, 3, torch.device("cpu"))
        checkpoint = tmp_path / f"agent_{level}.pt"
        save_checkpoint(
            checkpoint,
            {
                "kind": "agent",
                "agent_config": OmegaConf.to_container(OmegaConf.structured(cfg)),
                "agent": agent.state_dict(),
            },
        )
        gen.export_policy(checkpoint, tmp_path / "behaviour" / f"hopper-{level}.pt")
    monkeypatch.setattr(gen, "BEHAVIOUR_DIR", tmp_path / "behaviour")
    # Untrained policies may score below random; pin a valid range without rolling them out.
    with monkeypatch.context() as patch:
        patch.setattr(gen, "mean_return", lambda env, policy, *_: 10.0 if policy.actor is None else 1000.0)
        gen.measure_reference_scores(gen.ReferenceConfig(env="hopper", episodes=2))
    return tmp_path / "behaviour"


def test_generated_dataset_loads_with_minari_and_carries_reference_scores(behaviour_dir):
    import json

    import minari

    cfg = gen.GenerateConfig(
        level="medium-expert", size=150, seed=3, dataset_id="t/hopper/me-v0", progress=False
    )
    dataset_id = gen.generate(cfg)
    raw = minari.load_dataset(dataset_id)
    assert raw.total_steps == 300
    meta = raw.storage.metadata
    pinned = json.loads((behaviour_dir / "reference_scores.json").read_text())["hopper"]
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (
        pinned["ref_min_score"],
        pinned["ref_max_score"],
    )
    assert raw.env_spec.id == "Hopper-v5"
    ours = load_dataset(f"minari:{dataset_id}")
    assert len(ours) == 300 and (ours.info.ref_min_score, ours.info.ref_max_score) == (
        meta["ref_min_score"],
        meta["ref_max_score"],
    )
    assert ours.episode_ends[149]  # the medium part ends before the expert part starts


def test_the_generate_command_prints_the_new_copys_digest(behaviour_dir, capsys):
    from rl.data.__main__ import main

    args = ["generate", "env=hopper", "level=random", "size=60", "seed=2", "dataset_id=t/hopper/d-v0"]
    assert main([*args, "progress=false"]) == 0
    digest = load_dataset("minari:t/hopper/d-v0").sha256()
    assert capsys.readouterr().out == (
        f"o2o: wrote Minari dataset t/hopper/d-v0 (sha256 {digest}); train on it with dataset=minari:t/hopper/d-v0\n"
    )


def test_generation_is_deterministic_for_a_seed_and_refuses_to_overwrite(behaviour_dir):
    first = gen.generate(
        gen.GenerateConfig(level="random", size=80, seed=5, dataset_id="t/hopper/a-v0", progress=False)
    )
    second = gen.generate(
        gen.GenerateConfig(level="random", size=80, seed=5, dataset_id="t/hopper/b-v0", progress=False)
    )
    a, b = load_dataset(f"minari:{first}"), load_dataset(f"minari:{second}")
    assert np.array_equal(a.observations, b.observations) and np.array_equal(a.actions, b.actions)
    with pytest.raises(ValueError, match=r"already exists"):
        gen.generate(gen.GenerateConfig(level="random", size=80, seed=5, dataset_id=first, progress=False))


def test_reference_scores_are_measured_once_and_refused_when_the_expert_changes(behaviour_dir, monkeypatch):
    """Pinned scores are seeded means of each policy's returns; a bad range or a replaced expert is refused."""
    import json

    calls = []

    def fake_mean_return(env, policy, episodes, seed):
        calls.append((policy.actor is None, episodes, seed))
        return -5.0 if policy.actor is None else 500.0

    monkeypatch.setattr(gen, "mean_return", fake_mean_return)
    entry = gen.measure_reference_scores(gen.ReferenceConfig(env="hopper", episodes=7))
    assert calls == [(True, 7, 1_000_000), (False, 7, 2_000_000)]  # random first, then the expert
    table = json.loads((behaviour_dir / "reference_scores.json").read_text())
    assert table["hopper"] == entry and (entry["ref_min_score"], entry["ref_max_score"]) == (-5.0, 500.0)
    assert entry["command"] == "python -m rl.data reference env=hopper episodes=7 seed=0"

    monkeypatch.setattr(gen, "mean_return", lambda env, policy, *_: 50.0 if policy.actor is None else 20.0)
    with pytest.raises(ValueError, match=r"expert's mean return 20.0 is not above the random policy's 50.0"):
        gen.measure_reference_scores(gen.ReferenceConfig(env="hopper", episodes=1))
    assert json.loads((behaviour_dir / "reference_scores.json").read_text()) == table  # nothing lost

    # the 'medium' file stands in for a retrained expert
    (behaviour_dir / "hopper-expert.pt").write_bytes((behaviour_dir / "hopper-medium.pt").read_bytes())
    with pytest.raises(ValueError, match=r"hopper-expert.pt is not the expert the pinned reference scores"):
        gen.generate(gen.GenerateConfig(level="random", size=10, dataset_id="t/hopper/x-v0", progress=False))
    (behaviour_dir / "reference_scores.json").write_text("{}")
    with pytest.raises(ValueError, match=r"no pinned reference scores for hopper .* env=hopper'"):
        gen.generate(gen.GenerateConfig(level="random", size=10, dataset_id="t/hopper/x-v0", progress=False))
    (behaviour_dir / "reference_scores.json").write_text('{"hopper": {"ref_min_score": 1.0}}')
    with pytest.raises(ValueError, match=r"reference_scores.json: entry 'hopper' lacks \['expert_sha256'"):
        gen.pinned_reference_scores("hopper")
    (behaviour_dir / "reference_scores.json").write_text("{")
    with pytest.raises(ValueError, match=r"reference_scores.json: not valid JSON"):
        gen.pinned_reference_scores("hopper")


def test_the_repositorys_pinned_reference_scores_belong_to_its_experts():
    for env in gen.ENVS:
        entry = gen.pinned_reference_scores(env)  # raises if an expert changed without re-pinning
        assert entry["ref_max_score"] > entry["ref_min_score"]


def test_missing_policy_and_bad_arguments_are_named(tmp_path, monkeypatch):
    monkeypatch.setattr(gen, "BEHAVIOUR_DIR", tmp_path)
    # An empty store: on a machine that has generated walker2d-medium, "already exists" comes first.
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "store"))
    with pytest.raises(ValueError, match=r"no expert behaviour policy for walker2d"):
        gen.measure_reference_scores(gen.ReferenceConfig(env="walker2d"))
    with pytest.raises(ValueError, match=r"no pinned reference scores for walker2d"):
        gen.generate(gen.GenerateConfig(env="walker2d", level="medium", size=10, progress=False))
    with pytest.raises(ValueError, match=r"reference: env='ant' is not one of"):
        gen.measure_reference_scores(gen.ReferenceConfig(env="ant"))
    with pytest.raises(ValueError, match=r"level='hard' is not one of"):
        gen.generate(gen.GenerateConfig(level="hard"))
    with pytest.raises(ValueError, match=r"unknown argument 'sise=10'"):
        gen.parse_key_values(["sise=10"], gen.GenerateConfig)
    with pytest.raises(ValueError, match=r"size='ten': not a valid int"):
        gen.parse_key_values(["size=ten"], gen.GenerateConfig)


def fake_run_buffer(rows: int, capacity: int, episode_ends: list[int], terminal: set[int]) -> dict:
    """A run checkpoint's buffer and env config: ``rows`` transitions of known episodes, rewards scaled by 2."""
    obs = torch.zeros(rows, 11)
    next_obs = torch.zeros(rows, 11)
    counter = 0.0
    for i in range(rows):
        obs[i, 0] = counter
        counter += 1
        next_obs[i, 0] = counter
        if i in episode_ends:
            counter += 1000  # the next obs is a reset: not this row's next_obs
    buffer = {
        "capacity": capacity,
        "size": rows,
        "obs": {"_": obs},
        "next_obs": {"_": next_obs},
        "action": torch.rand(rows, 3),
        "reward": 2.0 * torch.arange(rows, dtype=torch.float32)[:, None] + 1.0,
        "terminated": torch.tensor([[float(i in terminal)] for i in range(rows)]),
    }
    return {"online_buffer": buffer, "config": {"env": {"reward_scale": 2.0, "reward_bias": 1.0}}}


def test_medium_replay_is_the_run_buffer_up_to_the_medium_step(behaviour_dir, tmp_path):
    save_checkpoint(
        tmp_path / "last.pt", fake_run_buffer(rows=40, capacity=100, episode_ends=[9, 24], terminal={9})
    )
    gen.export_medium_replay(tmp_path / "last.pt", "hopper", 30)
    (tmp_path / "last.pt").unlink()  # generation reads only the exported source
    dataset_id = gen.generate(
        gen.GenerateConfig(level="medium-replay", dataset_id="t/hopper/mr-v0", progress=False)
    )
    data = load_dataset(f"minari:{dataset_id}")
    assert len(data) == 30  # the first 30 rows: collection order up to the medium checkpoint
    assert np.flatnonzero(data.episode_ends).tolist() == [9, 24, 29]
    assert np.flatnonzero(data.terminated).tolist() == [9]  # row 24 ended by time limit, 29 by the cut
    np.testing.assert_allclose(data.rewards, np.arange(30))  # the buffer's scale and bias undone
    np.testing.assert_array_equal(
        data.observations[:, 0], np.arange(30) + 1000 * (np.arange(30) > 9) + 1000 * (np.arange(30) > 24)
    )
    np.testing.assert_array_equal(data.next_observations[9:11, 0], [10, 1011])


def test_medium_replay_refuses_a_wrapped_buffer_a_changed_source_and_a_missing_one(behaviour_dir, tmp_path):
    import h5py

    save_checkpoint(
        tmp_path / "wrapped.pt", fake_run_buffer(rows=40, capacity=40, episode_ends=[], terminal=set())
    )
    with pytest.raises(ValueError, match=r"holds 40 rows of capacity 40; medium-replay needs the first 30"):
        gen.export_medium_replay(tmp_path / "wrapped.pt", "hopper", 30)
    save_checkpoint(
        tmp_path / "last.pt", fake_run_buffer(rows=40, capacity=100, episode_ends=[9], terminal=set())
    )
    source = gen.export_medium_replay(tmp_path / "last.pt", "hopper", 30)
    with h5py.File(source, "r+") as f:
        f["rewards"][3] = 7.0
    with pytest.raises(ValueError, match=r"hopper-medium-replay.hdf5 does not match the sha256 recorded"):
        gen.generate(gen.GenerateConfig(level="medium-replay", progress=False))
    source.unlink()
    with pytest.raises(ValueError, match=r"reads .*hopper-medium-replay.hdf5, which is missing"):
        gen.generate(gen.GenerateConfig(level="medium-replay", progress=False))
    (behaviour_dir / "hopper-medium-replay.json").unlink()
    with pytest.raises(ValueError, match=r"no medium-replay source for hopper"):
        gen.generate(gen.GenerateConfig(level="medium-replay", progress=False))


def test_the_repositorys_medium_replay_sources_match_their_manifests():
    import json

    rows = {"hopper": 250_000, "walker2d": 190_000, "halfcheetah": 30_000}  # the recipe's medium steps
    for env, expected_rows in rows.items():
        manifest = json.loads((gen.BEHAVIOUR_DIR / f"{env}-medium-replay.json").read_text())
        assert manifest["env_steps"] == expected_rows
        assert gen.file_digest(gen.BEHAVIOUR_DIR / manifest["source_file"]) == manifest["source_sha256"]


def _select_policies_module():
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location(
        "select_policies", REPO / "experiments/behaviour/select_policies.py"
    )
    select = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(select)
    return select


def _write_eval_returns(run, returns):
    (run / "checkpoints").mkdir(parents=True)
    with (run / "metrics.csv").open("w") as f:
        f.write("step,phase,env_steps,metric,value\n")
        for step, value in returns.items():
            f.write(f"{step},online,{step},eval_return,{value}\n")


def test_select_policies_picks_best_and_a_third_and_names_the_replay_rows(tmp_path, monkeypatch):
    import json

    select = _select_policies_module()
    run = tmp_path / "run"
    returns = {10: 200.0, 20: 1000.0, 30: 3100.0, 40: 2900.0, 50: 3000.0}
    _write_eval_returns(run, returns)
    save_checkpoint(
        run / "checkpoints" / "last.pt",
        {**fake_run_buffer(rows=30, capacity=100, episode_ends=[9], terminal=set()), "loop": {"step": 35}},
    )
    for step in returns:
        torch.manual_seed(step)
        cfg = SACConfig(actor_hidden=[8])
        agent = SAC(cfg, 11, 3, torch.device("cpu"))
        payload = {"kind": "agent", "agent_config": OmegaConf.to_container(OmegaConf.structured(cfg))}
        save_checkpoint(
            run / "checkpoints" / f"agent_step{step}.pt", {**payload, "agent": agent.state_dict()}
        )
    monkeypatch.setattr(select, "BEHAVIOUR_DIR", tmp_path / "behaviour")
    chosen = select.main(run, "hopper")
    # expert: best evaluated snapshot (30); medium: the earlier one closest to 3100 / 3 (20 at 1000)
    assert (chosen["expert_step"], chosen["medium_step"]) == (30, 20)
    replay = json.loads((tmp_path / "behaviour" / "hopper-medium-replay.json").read_text())
    assert replay["env_steps"] == 20 and replay["exported_from"].startswith(
        str(run / "checkpoints" / "last.pt")
    )
    assert (tmp_path / "behaviour" / "hopper-expert.pt").is_file()


def test_select_policies_takes_the_final_agent_from_the_runs_last_checkpoint(tmp_path, monkeypatch):
    """A finished run whose best evaluation is its last step: last.pt holds that agent."""
    select = _select_policies_module()
    run = tmp_path / "run"
    _write_eval_returns(run, {10: 200.0, 20: 1100.0, 30: 3300.0})
    cfg = SACConfig(actor_hidden=[8])
    config = OmegaConf.to_container(OmegaConf.structured(cfg))
    agents = {}
    for step in (10, 20, 30):
        torch.manual_seed(step)
        agents[step] = SAC(cfg, 11, 3, torch.device("cpu"))
    for step in (10, 20):
        save_checkpoint(
            run / "checkpoints" / f"agent_step{step}.pt",
            {"kind": "agent", "agent_config": config, "agent": agents[step].state_dict()},
        )
    save_checkpoint(
        run / "checkpoints" / "last.pt",
        {
            "online_buffer": fake_run_buffer(rows=30, capacity=100, episode_ends=[9], terminal=set())[
                "online_buffer"
            ],
            "config": {"agent": config, "env": {"reward_scale": 2.0, "reward_bias": 1.0}},
            "kind": "run",
            "agent": agents[30].state_dict(),
            "loop": {"step": 30},
        },
    )
    monkeypatch.setattr(select, "BEHAVIOUR_DIR", tmp_path / "behaviour")
    chosen = select.main(run, "hopper")
    assert (chosen["expert_step"], chosen["medium_step"]) == (30, 20)
    exported = load_checkpoint(tmp_path / "behaviour" / "hopper-expert.pt")
    for name, tensor in agents[30].ac.actor.state_dict().items():
        assert torch.equal(exported["actor"][name], tensor), name


def test_data_cli_help_prints_the_usage_and_exits_0(capsys):
    from rl.data.__main__ import main

    assert main(["--help"]) == 0 and "python -m rl.data generate" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2
