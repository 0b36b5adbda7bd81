"""Dataset generation through minari's writer, with behaviour policies exported from SAC checkpoints."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import rl.data.generate as gen
from rl.agents.sac import SAC, SACConfig
from rl.data import load_dataset
from rl.loops.checkpoint import save_checkpoint


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
    return tmp_path / "behaviour"


def test_generated_dataset_loads_with_minari_and_carries_reference_scores(behaviour_dir):
    import minari

    cfg = gen.GenerateConfig(
        level="medium-expert", size=150, seed=3, score_episodes=2, dataset_id="t/hopper/me-v0", progress=False
    )
    dataset_id = gen.generate(cfg)
    raw = minari.load_dataset(dataset_id)
    assert raw.total_steps == 300
    meta = raw.storage.metadata
    # untrained "experts" score no better than random here; what matters is that both were measured
    assert np.isfinite(meta["ref_min_score"]) and np.isfinite(meta["ref_max_score"])
    assert raw.env_spec.id == "Hopper-v5"
    ours = load_dataset(f"minari:{dataset_id}")
    assert len(ours) == 300 and (ours.info.ref_min_score, ours.info.ref_max_score) == (
        meta["ref_min_score"],
        meta["ref_max_score"],
    )
    assert ours.episode_ends[149]  # the medium part ends before the expert part starts


def test_generation_is_deterministic_for_a_seed_and_refuses_to_overwrite(behaviour_dir):
    first = gen.generate(
        gen.GenerateConfig(
            level="random", size=80, seed=5, score_episodes=1, dataset_id="t/hopper/a-v0", progress=False
        )
    )
    second = gen.generate(
        gen.GenerateConfig(
            level="random", size=80, seed=5, score_episodes=1, dataset_id="t/hopper/b-v0", progress=False
        )
    )
    a, b = load_dataset(f"minari:{first}"), load_dataset(f"minari:{second}")
    assert np.array_equal(a.observations, b.observations) and np.array_equal(a.actions, b.actions)
    with pytest.raises(ValueError, match=r"already exists"):
        gen.generate(gen.GenerateConfig(level="random", size=80, seed=5, dataset_id=first, progress=False))


def test_missing_policy_and_bad_arguments_are_named(tmp_path, monkeypatch):
    monkeypatch.setattr(gen, "BEHAVIOUR_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"no expert behaviour policy for walker2d"):
        gen.generate(gen.GenerateConfig(env="walker2d", level="medium", size=10, progress=False))
    with pytest.raises(ValueError, match=r"level='hard' is not one of"):
        gen.generate(gen.GenerateConfig(level="hard"))
    with pytest.raises(ValueError, match=r"unknown argument 'sise=10'"):
        gen.parse_key_values(["sise=10"], gen.GenerateConfig)
    with pytest.raises(ValueError, match=r"size='ten': not a valid int"):
        gen.parse_key_values(["size=ten"], gen.GenerateConfig)
