import numpy as np
import pytest
import torch

from rl.buffers import Batch, MixedSampler, ObsSpec, ReplayBuffer
from rl.data import Dataset, DatasetInfo, mc_return_to_go

SPEC = ObsSpec({"_": ((2,), torch.float32)}, False)


def _add(buf: ReplayBuffer, start: int, n: int, terminated=None) -> torch.Tensor:
    values = torch.arange(start, start + n, dtype=torch.float32)
    return buf.add(
        values[:, None].repeat(1, 2),
        values[:, None],
        values,
        values[:, None].repeat(1, 2) + 0.5,
        torch.zeros(n) if terminated is None else terminated,
    )


def test_ring_wraps_and_overwrites_the_oldest_rows():
    buf = ReplayBuffer(5, SPEC, action_dim=1)
    _add(buf, 0, 4)
    rows = _add(buf, 4, 3)
    assert rows.tolist() == [4, 0, 1] and len(buf) == 5 and buf.ptr == 2
    assert buf.reward.tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]


def test_reward_scale_and_bias_are_applied_once_on_the_way_in():
    buf = ReplayBuffer(4, SPEC, action_dim=1, reward_scale=10.0, reward_bias=-5.0)
    _add(buf, 1, 2)
    assert buf.reward[:2].tolist() == [5.0, 15.0]
    assert buf.sample(8).reward.unique().tolist() == [5.0, 15.0]


def test_terminated_rows_mask_bootstrap_but_truncated_rows_do_not():
    """A time-limit end is stored with terminated=0, so its target still bootstraps."""
    buf = ReplayBuffer(4, SPEC, action_dim=1)
    _add(buf, 0, 2, terminated=torch.tensor([True, False]))  # row 1 is, say, a truncation
    batch = buf.gather(torch.tensor([0, 1]))
    assert batch.terminated.tolist() == [1.0, 0.0]


def test_mc_returns_for_a_finished_online_episode():
    buf = ReplayBuffer(8, SPEC, action_dim=1, gamma=0.5, reward_scale=2.0)
    rows = torch.cat([_add(buf, 1, 1), _add(buf, 2, 1), _add(buf, 3, 1)])  # raw rewards 1, 2, 3
    assert torch.isinf(buf.mc_return[rows]).all()  # unknown until the episode ends
    buf.write_mc_returns(rows)
    # scaled rewards 2, 4, 6: G2 = 6, G1 = 4 + 3, G0 = 2 + 3.5
    assert buf.mc_return[rows].tolist() == [5.5, 7.0, 6.0]


def test_mc_return_to_go_by_hand_and_the_sparse_rule():
    rewards = np.array([1.0, 0.0, 2.0, -1.0, -1.0], dtype=np.float32)
    ends = np.array([False, False, True, False, True])
    g = mc_return_to_go(rewards, ends, gamma=0.9)
    assert np.allclose(g, [1 + 0.9 * 0 + 0.81 * 2, 0.9 * 2, 2.0, -1 - 0.9, -1.0])
    sparse = mc_return_to_go(rewards, ends, gamma=0.9, sparse_negative_reward=-1.0)
    assert np.allclose(sparse[3:], [-10.0, -10.0]) and np.allclose(sparse[:3], g[:3])
    with pytest.raises(ValueError, match=r"last row must end an episode"):
        mc_return_to_go(rewards, np.zeros(5, dtype=bool), 0.9)


def test_add_dataset_computes_mc_returns_per_episode_on_scaled_rewards():
    n = 5
    obs = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    dataset = Dataset(
        observations=obs,
        actions=np.zeros((n, 1), np.float32),
        rewards=np.ones(n, np.float32),
        next_observations=obs + 1,
        terminated=np.array([0, 1, 0, 0, 0], bool),
        truncated=np.array([0, 0, 0, 0, 1], bool),
        info=DatasetInfo("test"),
    )
    buf = ReplayBuffer(10, SPEC, action_dim=1, gamma=0.5, reward_bias=1.0)
    buf.add_dataset(dataset)
    assert buf.mc_return[:5].tolist() == [3.0, 2.0, 3.5, 3.0, 2.0]


def test_mixing_ratio_is_exact_in_every_batch():
    offline, online = ReplayBuffer(100, SPEC, 1), ReplayBuffer(100, SPEC, 1)
    _add(offline, 0, 50)  # rewards 0..49
    _add(online, 1000, 50)  # rewards 1000..1049
    for ratio, expected in [(0.0, 0), (0.25, 64), (0.5, 128), (1.0, 256)]:
        sampler = MixedSampler(offline, online, ratio)
        for _ in range(20):
            batch = sampler.sample(256)
            assert int((batch.reward < 1000).sum()) == expected
    with pytest.raises(ValueError, match=r"needs offline data"):
        MixedSampler(None, online, 0.5)


def test_sampling_covers_the_buffer_uniformly():
    buf = ReplayBuffer(10, SPEC, 1, seed=3)
    _add(buf, 0, 10)
    counts = torch.bincount(buf.sample(20_000).reward.long(), minlength=10)
    assert counts.min() > 1800 and counts.max() < 2200  # 2000 expected each; ~4.5 sigma band


def test_state_round_trip_continues_the_same_samples():
    buf = ReplayBuffer(16, SPEC, 1, seed=7)
    _add(buf, 0, 12)
    buf.sample(4)
    state = buf.state_dict()
    expected = buf.sample(6).reward
    restored = ReplayBuffer(16, SPEC, 1, seed=99)
    restored.load_state_dict(state)
    assert torch.equal(restored.sample(6).reward, expected)
    assert restored.ptr == buf.ptr and len(restored) == 12
    with pytest.raises(ValueError, match=r"capacity"):
        ReplayBuffer(8, SPEC, 1).load_state_dict(state)


def test_saved_state_holds_only_the_filled_rows(tmp_path):
    """A checkpoint's size follows the data, not the preallocated capacity."""
    buf = ReplayBuffer(100_000, SPEC, 1)
    _add(buf, 0, 10)
    torch.save(buf.state_dict(), tmp_path / "buffer.pt")
    assert (tmp_path / "buffer.pt").stat().st_size < 20_000  # the full capacity would be ~3 MB


def test_dict_observations_keep_uint8_pixels():
    spec = ObsSpec({"pixels": ((3, 4, 4), torch.uint8), "state": ((2,), torch.float32)}, True)
    buf = ReplayBuffer(4, spec, action_dim=1)
    obs = {"pixels": torch.full((2, 3, 4, 4), 255, dtype=torch.uint8), "state": torch.ones(2, 2)}
    buf.add(obs, torch.zeros(2, 1), torch.zeros(2), obs, torch.zeros(2))
    batch = buf.sample(3)
    assert batch.obs["pixels"].dtype == torch.uint8 and batch.obs["pixels"].max() == 255
    assert buf.obs["pixels"].element_size() == 1


def test_batch_split_and_cat_round_trip():
    buf = ReplayBuffer(8, SPEC, 1)
    _add(buf, 0, 8)
    batch = buf.gather(torch.arange(8))
    parts = batch.split(4)
    assert [p.reward.tolist() for p in parts] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert torch.equal(Batch.cat(parts).obs, batch.obs)
    with pytest.raises(ValueError):
        batch.split(3)
