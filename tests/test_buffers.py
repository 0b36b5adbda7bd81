import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl.buffers import Batch, MixedSampler, ObsSpec, ReplayBuffer, fill_from_dataset
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
    fill_from_dataset(buf, dataset)
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


@pytest.mark.parametrize(("ratio", "online_share"), [(0.0, 256), (0.5, 128), (0.75, 64)])
def test_sampler_is_ready_once_the_online_buffer_holds_the_batchs_online_share(ratio, online_share):
    offline, online = ReplayBuffer(300, SPEC, 1), ReplayBuffer(300, SPEC, 1)
    _add(offline, 0, 10)
    sampler = MixedSampler(offline, online, ratio)
    _add(online, 0, online_share - 1)
    assert not sampler.ready(256)
    _add(online, 0, 1)
    assert sampler.ready(256)
    assert MixedSampler(offline, ReplayBuffer(300, SPEC, 1), 1.0).ready(256)  # offline only


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
    assert buf.frames["pixels"].element_size() == 1  # pixels live once per frame, see below


def test_batch_split_and_cat_round_trip():
    buf = ReplayBuffer(8, SPEC, 1)
    _add(buf, 0, 8)
    batch = buf.gather(torch.arange(8))
    parts = batch.split(4)
    assert [p.reward.tolist() for p in parts] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert torch.equal(Batch.cat(parts).obs, batch.obs)
    with pytest.raises(ValueError):
        batch.split(3)


# -- pixel columns: frames stored once, rows pointing into a frame ring ----------------------------

PIXELS = ObsSpec({"pixels": ((2, 4, 3), torch.uint8), "state": ((1,), torch.float32)}, True)


def _frames(ids: torch.Tensor, shape: tuple[int, ...] = (2, 4, 3)) -> torch.Tensor:
    """Distinct uint8 frames for distinct ids: the id's 8 bytes, tiled."""
    raw = ids.to(torch.int64).reshape(-1, 1).view(torch.uint8)  # (n, 8)
    size = int(np.prod(shape))
    return raw.repeat(1, -(-size // 8))[:, :size].reshape(-1, *shape)


def _frame_ids(frames: torch.Tensor) -> torch.Tensor:
    return frames.flatten(1)[:, :8].contiguous().view(torch.int64).squeeze(1)


class _VectorStream:
    """n env copies with random episode lengths, producing frames with unique ids.

    Each transition's reward is its serial number, and ``truth[serial]`` its (obs id, next obs id).
    At an episode end ``next_obs`` is the final frame and the copy's next obs a new reset frame.
    """

    def __init__(self, n: int, lengths: tuple[int, int], seed: int = 0, shape=(2, 4, 3)) -> None:
        self.n, self.lengths, self.shape = n, lengths, shape
        self.rng = np.random.default_rng(seed)
        self.next_id = 0
        self.obs = self._new(n)
        self.left = self.rng.integers(*lengths, size=n, endpoint=True)
        self.serial = 0
        self.truth: dict[int, tuple[int, int]] = {}

    def _new(self, k: int) -> torch.Tensor:
        ids = torch.arange(self.next_id, self.next_id + k)
        self.next_id += k
        return ids

    def step(self, buf: ReplayBuffer) -> torch.Tensor:
        n = self.n
        next_ids = self._new(n)
        self.left -= 1
        done = self.left == 0
        serials = torch.arange(self.serial, self.serial + n)
        self.serial += n
        for j in range(n):
            self.truth[int(serials[j])] = (int(self.obs[j]), int(next_ids[j]))
        rows = buf.add(
            {"pixels": _frames(self.obs, self.shape), "state": self.obs[:, None].float()},
            torch.zeros(n, 1),
            serials.float(),
            {"pixels": _frames(next_ids, self.shape), "state": next_ids[:, None].float()},
            torch.from_numpy(done).float(),
        )
        following = next_ids.clone()
        if done.any():  # reset frames
            following[torch.from_numpy(done)] = self._new(int(done.sum()))
            self.left[done] = self.rng.integers(*self.lengths, size=int(done.sum()), endpoint=True)
        self.obs = following
        return rows


def _check_rows(buf: ReplayBuffer, stream: _VectorStream, batch: Batch) -> None:
    """Every row's frames are the ones added with it; it is one of the newest len(buf) transitions."""
    serials = batch.reward.long()
    assert int(serials.min()) >= stream.serial - len(buf)
    expected = torch.tensor([stream.truth[int(s)] for s in serials])
    assert torch.equal(_frame_ids(batch.obs["pixels"]), expected[:, 0])
    assert torch.equal(_frame_ids(batch.next_obs["pixels"]), expected[:, 1])
    assert torch.equal(batch.obs["state"][:, 0].long(), expected[:, 0])  # float columns per row, as before
    assert torch.equal(batch.next_obs["state"][:, 0].long(), expected[:, 1])


def _window(buf: ReplayBuffer) -> Batch:
    """All sampleable rows."""
    return buf.gather(buf._window_rows())


def test_pixel_rows_return_their_frames_across_episode_ends_in_a_vector_add():
    buf = ReplayBuffer(200, PIXELS, action_dim=1, seed=1)
    stream = _VectorStream(n=4, lengths=(1, 6))
    for _ in range(40):  # 160 rows, many episode ends, some on the same step
        stream.step(buf)
    assert len(buf) == 160
    _check_rows(buf, stream, _window(buf))
    _check_rows(buf, stream, buf.sample(512))
    # Frames are shared: one next frame per row, plus each copy's first and reset frames only.
    resets = stream.next_id - 160  # ids not written as a next frame
    assert buf.ring.ptr == 160 + resets


def test_pixel_rows_stay_exact_across_ring_wrap_around_and_drop_early_when_frames_run_out():
    # Episodes of 1-3 steps need ~1.5 frames a row: 48 frame slots hold ~32 rows, not the capacity 40.
    buf = ReplayBuffer(40, PIXELS, action_dim=1, frame_capacity=48, seed=2)
    stream = _VectorStream(n=3, lengths=(1, 3), seed=2)
    sizes = []
    for _ in range(200):  # both rings wrap many times
        stream.step(buf)
        window = _window(buf)
        _check_rows(buf, stream, window)
        assert sorted(window.reward.long().tolist()) == list(range(stream.serial - len(buf), stream.serial))
        sizes.append(len(buf))
    assert min(sizes[50:]) >= 20 and max(sizes) < 40
    _check_rows(buf, stream, buf.sample(1000))
    # Long episodes: frames suffice, the row ring alone decides.
    buf = ReplayBuffer(40, PIXELS, action_dim=1, frame_capacity=48)
    stream = _VectorStream(n=3, lengths=(30, 30))
    for _ in range(100):
        stream.step(buf)
    assert len(buf) == 40
    _check_rows(buf, stream, _window(buf))


def test_a_pixel_batch_larger_than_half_the_frame_ring_keeps_only_rows_whose_frames_survive():
    buf = ReplayBuffer(50, PIXELS, action_dim=1, frame_capacity=21)
    stream = _VectorStream(n=50, lengths=(5, 5))
    stream.step(buf)  # 50 fresh obs + 50 next frames into 21 slots
    assert 0 < len(buf) <= 10
    _check_rows(buf, stream, _window(buf))
    stream.step(buf)
    _check_rows(buf, stream, _window(buf))


def test_pixel_storage_is_at_most_1_1x_the_raw_frames_of_a_long_stream():
    shape = (84, 84, 3)
    spec = ObsSpec({"pixels": (shape, torch.uint8)}, True)
    capacity = 2000
    buf = ReplayBuffer(capacity, spec, action_dim=1)
    obs_ids = torch.arange(4)
    next_id, length = 4, 100
    for step in range(3 * capacity // 4):
        next_ids = torch.arange(next_id, next_id + 4)
        next_id += 4
        buf.add(
            {"pixels": _frames(obs_ids, shape)},
            torch.zeros(4, 1),
            torch.zeros(4),
            {"pixels": _frames(next_ids, shape)},
            torch.zeros(4),
        )
        obs_ids = next_ids.clone()
        if (step + 1) % length == 0:  # all copies reset together
            obs_ids = torch.arange(next_id, next_id + 4)
            next_id += 4
    assert len(buf) == capacity
    pixel_bytes = sum(t.numel() * t.element_size() for t in (*buf.frames.values(), buf.obs_idx, buf.next_idx))
    pixel_bytes += buf.ring.owner.nbytes + buf.ring.last_next.nbytes
    raw = capacity * int(np.prod(shape))
    assert pixel_bytes <= 1.1 * raw, pixel_bytes / raw
    index = torch.arange(0, capacity, 97)
    batch = buf.gather(index)
    assert torch.equal(
        _frame_ids(batch.next_obs["pixels"]) - _frame_ids(batch.obs["pixels"]), torch.full_like(index, 4)
    )


@pytest.mark.parametrize(
    ("frame_capacity", "lengths", "steps", "saved"),
    [
        (200, (1, 4), 8, "partly filled"),
        (48, (1, 4), 30, "rows dropped early"),  # the window starts mid-ring
        (45, (12, 16), 20, "rows dropped early"),
        (45, (12, 16), 41, "full"),  # saved from position 0, not oldest first; drops rows later
    ],
)
def test_pixel_state_round_trip_continues_exactly(tmp_path, frame_capacity, lengths, steps, saved):
    buf = ReplayBuffer(40, PIXELS, action_dim=1, frame_capacity=frame_capacity, seed=5)
    stream = _VectorStream(n=3, lengths=lengths, seed=1)
    for _ in range(steps):
        stream.step(buf)
    buf.sample(7)
    state = {"partly filled": len(buf) < 40 and buf.ptr == len(buf), "full": len(buf) == 40 and buf.ptr != 0}
    assert state.get(saved, buf._window_start() != 0)
    torch.save(buf.state_dict(), tmp_path / "buffer.pt")
    restored = ReplayBuffer(40, PIXELS, action_dim=1, frame_capacity=frame_capacity, seed=99)
    restored.load_state_dict(torch.load(tmp_path / "buffer.pt"))
    twin = copy.deepcopy(stream)
    sizes = []
    for _ in range(40):  # the same future on both
        stream.step(buf)
        twin.step(restored)
        assert (len(restored), restored.ptr, restored.ring.ptr) == (len(buf), buf.ptr, buf.ring.ptr)
        a, b = buf.sample(16), restored.sample(16)
        for field in ("reward", "action", "terminated", "mc_return"):
            assert torch.equal(getattr(a, field), getattr(b, field))
        for key in ("pixels", "state"):
            assert torch.equal(a.obs[key], b.obs[key]) and torch.equal(a.next_obs[key], b.next_obs[key])
        _check_rows(restored, twin, b)
        sizes.append(len(buf))
    assert min(sizes) < 40


def test_saved_pixel_state_holds_only_the_filled_rows(tmp_path):
    shape = (84, 84, 3)
    buf = ReplayBuffer(10_000, ObsSpec({"pixels": (shape, torch.uint8)}, True), action_dim=1)
    ids = torch.arange(2)
    for _ in range(5):
        buf.add(
            {"pixels": _frames(ids, shape)},
            torch.zeros(2, 1),
            torch.zeros(2),
            {"pixels": _frames(ids + 2, shape)},
            torch.zeros(2),
        )
        ids = ids + 2
    torch.save(buf.state_dict(), tmp_path / "buffer.pt")
    frame = int(np.prod(shape))
    # 12 distinct frames (2 first + 10 next); the ring is 10,500 frames (222 MB).
    assert buf.ring.ptr == 12
    assert (tmp_path / "buffer.pt").stat().st_size < 12 * frame + 20_000


def test_array_pixel_observations_share_frames_too():
    shape = (4, 2, 3)
    buf = ReplayBuffer(10, ObsSpec.from_space(gym.spaces.Box(0, 255, shape, np.uint8)), action_dim=1)
    ids = torch.arange(2)
    for _ in range(8):
        buf.add(
            _frames(ids, shape), torch.zeros(2, 1), torch.zeros(2), _frames(ids + 2, shape), torch.zeros(2)
        )
        ids = ids + 2
    batch = buf.gather(torch.arange(10))
    assert isinstance(batch.obs, torch.Tensor) and batch.obs.dtype == torch.uint8
    assert torch.equal(_frame_ids(batch.next_obs) - _frame_ids(batch.obs), torch.full((10,), 2))
    assert len(buf) == 10 and buf.ring.ptr == 2 + 16  # two first frames, then one frame a row


def _pixel_dataset(episode_lengths: list[int], first_id: int = 0) -> tuple[Dataset, list[tuple[int, int]]]:
    obs, nxt, term, trunc, truth = [], [], [], [], []
    next_id = first_id
    for length in episode_lengths:
        current = next_id
        next_id += 1
        for t in range(length):
            obs.append(current)
            nxt.append(next_id)
            truth.append((current, next_id))
            current = next_id
            next_id += 1
            term.append(t == length - 1)
            trunc.append(False)
    n = len(obs)
    o, x = torch.tensor(obs), torch.tensor(nxt)
    dataset = Dataset(
        observations={"pixels": _frames(o).numpy(), "state": o[:, None].float().numpy()},
        actions=np.zeros((n, 1), np.float32),
        rewards=np.arange(first_id, first_id + n, dtype=np.float32),  # rewards are row ids here
        next_observations={"pixels": _frames(x).numpy(), "state": x[:, None].float().numpy()},
        terminated=np.array(term),
        truncated=np.array(trunc),
        info=DatasetInfo("test-pixels"),
    )
    return dataset, truth


def test_pixel_dataset_shares_frames_and_grows_the_ring_when_episodes_are_short():
    dataset, truth = _pixel_dataset([3] * 100)  # 300 rows, 400 distinct frames
    buf = ReplayBuffer(len(dataset), PIXELS, action_dim=1, gamma=0.5)
    assert buf.ring.slots == 300 + 64
    fill_from_dataset(buf, dataset, chunk=64)  # chunks cross episodes; frames chain across them
    assert len(buf) == 300 and buf.ring.slots == 400 and buf.ring.ptr == 0  # exactly the distinct frames
    batch = buf.gather(torch.arange(300))
    assert torch.equal(_frame_ids(batch.obs["pixels"]), torch.tensor(truth)[:, 0])
    assert torch.equal(_frame_ids(batch.next_obs["pixels"]), torch.tensor(truth)[:, 1])
    expected = mc_return_to_go(dataset.rewards, dataset.episode_ends, 0.5)
    assert np.allclose(buf.mc_return.numpy(), expected)


def test_pixel_dataset_added_to_a_filled_buffer_keeps_the_earlier_rows():
    buf = ReplayBuffer(500, PIXELS, action_dim=1, frame_capacity=300)
    stream = _VectorStream(n=2, lengths=(50, 50))
    for _ in range(100):
        stream.step(buf)
    dataset, truth = _pixel_dataset([2] * 100, first_id=10_000)  # 200 rows, 300 frames: 500 > 300 slots
    fill_from_dataset(buf, dataset)
    assert len(buf) == 400 and buf.ring.slots >= 500
    online = buf.gather(torch.arange(200))
    _check_rows(buf, stream, online)
    offline = buf.gather(torch.arange(200, 400))
    assert torch.equal(_frame_ids(offline.obs["pixels"]), torch.tensor(truth)[:, 0])
    assert torch.equal(_frame_ids(offline.next_obs["pixels"]), torch.tensor(truth)[:, 1])
    stream.step(buf)  # reuse candidates were remapped with the ring
    # The grown ring was exactly full. The copies' obs are compared with the previous append's (the
    # dataset's) next frames, so they are stored again: 4 new frames overwrite the obs frames of
    # the 4 oldest online rows, which leave the window.
    assert len(buf) == 398 and buf._window_start() == 4
    _check_rows(buf, stream, buf.gather(torch.tensor([*range(4, 200), 400, 401])))
    assert buf.ring.last_next.tolist() == buf.next_idx[400:402].tolist()
