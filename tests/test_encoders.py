"""Image encoders: shapes, random-shift augmentation, gradient flow, frozen backbones, refusals."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium.vector.utils import batch_space

from rl.nets.encoders import (
    HEADS,
    ConvTrunk,
    EncoderConfig,
    ObservationEncoder,
    ResNet10,
    SpatialEmbedding,
    SpatialSoftmax,
    draw_shifts,
    shift_images,
)


def camera(size: int = 84, channels: int = 3) -> gym.spaces.Box:
    return gym.spaces.Box(0, 255, (size, size, channels), np.uint8)


def proprio(dim: int = 9) -> gym.spaces.Box:
    return gym.spaces.Box(-np.inf, np.inf, (dim,), np.float64)


def sample(space: gym.spaces.Dict, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch as the replay buffer hands it out: uint8 cameras, float32 proprio."""
    g = torch.Generator().manual_seed(seed)
    return {
        key: torch.randint(0, 256, (batch, *sub.shape), generator=g, dtype=torch.uint8)
        if sub.dtype == np.uint8
        else torch.randn(batch, *sub.shape, generator=g)
        for key, sub in space.spaces.items()
    }


TWO_CAMERAS = gym.spaces.Dict({"agentview": camera(), "robot0_eye_in_hand": camera(), "state": proprio(9)})


@pytest.mark.parametrize("head", HEADS)
def test_output_shapes_for_one_and_two_cameras_with_proprio(head):
    one_camera = gym.spaces.Dict({"agentview": camera()})
    one = ObservationEncoder(one_camera, EncoderConfig(head=head))
    assert one.out_dim == 50 and one(sample(one_camera, 3)).shape == (3, 50)
    projected = ObservationEncoder(TWO_CAMERAS, EncoderConfig(head=head, feature_dim=20, proprio_dim=16))
    assert projected.out_dim == 2 * 20 + 16
    assert projected(sample(TWO_CAMERAS, 3)).shape == (3, 56)
    raw = ObservationEncoder(TWO_CAMERAS, EncoderConfig(head=head, feature_dim=20, proprio_dim=0))
    obs = sample(TWO_CAMERAS, 3)
    features = raw(obs)
    assert raw.out_dim == 2 * 20 + 9 and features.shape == (3, 49)
    assert torch.equal(features[:, 40:], obs["state"])  # raw proprio comes last, unchanged
    assert features[:, :40].abs().max() < 1  # camera features end in tanh


def test_keys_choose_and_order_what_is_encoded():
    enc = ObservationEncoder(TWO_CAMERAS, EncoderConfig(keys=["robot0_eye_in_hand"], feature_dim=8))
    assert list(enc.cameras) == ["robot0_eye_in_hand"] and enc.proprio_keys == [] and enc.out_dim == 8


def test_pixels_are_scaled_to_unit_range_inside():
    enc = ObservationEncoder(gym.spaces.Dict({"cam": camera(16)}), EncoderConfig())
    image_encoder = enc.cameras["cam"]
    white = torch.full((1, 3, 16, 16), 255, dtype=torch.uint8)
    assert torch.allclose(image_encoder.feature_map(white), image_encoder.backbone(torch.ones(1, 3, 16, 16)))


def test_frame_stacking_stacks_frames_along_channels_oldest_first():
    stacked = batch_space(
        gym.spaces.Dict({"cam": camera(32), "state": proprio(4)}), 3
    )  # FrameStackObservation's
    assert stacked["cam"].shape == (3, 32, 32, 3) and stacked["state"].shape == (3, 4)
    enc = ObservationEncoder(stacked, EncoderConfig(frame_stack=3, feature_dim=10, proprio_dim=0))
    assert enc.cameras["cam"].backbone[0].in_channels == 9 and enc.out_dim == 10 + 12
    obs = sample(stacked, 2)
    by_hand = torch.cat([obs["cam"][:, i].permute(0, 3, 1, 2) for i in range(3)], dim=1)  # (B, 9, H, W)
    features = enc(obs)
    assert torch.allclose(features[:, :10], enc.cameras["cam"](by_hand))
    assert torch.equal(features[:, 10:], obs["state"].flatten(1))


def _padded_crop(image: torch.Tensor, offset: tuple[int, int], pad: int) -> torch.Tensor:
    """Reference: replicate-pad an (H, W, C) image, then crop it back at ``offset``."""
    h, w = image.shape[:2]
    padded = F.pad(image.permute(2, 0, 1)[None].float(), (pad,) * 4, mode="replicate")[0].permute(1, 2, 0)
    return padded[offset[0] : offset[0] + h, offset[1] : offset[1] + w].to(image.dtype)


def test_random_shift_is_a_crop_of_the_padded_image_within_the_pad():
    pad, rows = 4, 400
    # Distinct pixel values, so every crop of the padded image differs from every other.
    image = torch.arange(12 * 12 * 2, dtype=torch.int16).reshape(12, 12, 2)
    images = image.expand(rows, -1, -1, -1)
    shifts = draw_shifts(rows, pad, torch.Generator().manual_seed(0))
    shifted = shift_images(images, shifts, pad)
    assert shifts.min() == 0 and shifts.max() == 2 * pad  # the largest shift is exactly the pad, both ways
    for row in range(rows):
        offset = (int(shifts[row, 0]), int(shifts[row, 1]))
        assert torch.equal(shifted[row], _padded_crop(image, offset, pad))
    # Each row shows exactly one crop of the padded image: the shift can be read back from the content.
    row = 7
    matches = [
        (dy, dx)
        for dy in range(2 * pad + 1)
        for dx in range(2 * pad + 1)
        if torch.equal(shifted[row], _padded_crop(image, (dy, dx), pad))
    ]
    assert matches == [tuple(shifts[row].tolist())]


def test_stacked_frames_of_a_row_share_one_shift_and_uint8_stays_exact():
    frames = torch.randint(0, 256, (5, 3, 10, 10, 3), dtype=torch.uint8)
    shifts = draw_shifts(5, 2, torch.Generator().manual_seed(1))
    shifted = shift_images(frames, shifts, 2)
    assert shifted.dtype == torch.uint8
    for b in range(5):
        for t in range(3):
            assert torch.equal(shifted[b, t], _padded_crop(frames[b, t], tuple(shifts[b].tolist()), 2))


def test_same_shift_for_obs_and_next_obs_only_when_asked():
    space = gym.spaces.Dict({"cam": camera(16), "state": proprio(3)})
    enc = ObservationEncoder(space, EncoderConfig(pad=4))
    obs = sample(space, 64)
    next_obs = {k: v.clone() for k, v in obs.items()}  # the same content, so equal shifts give equal crops

    same = enc.augment_pair(obs, next_obs, torch.Generator().manual_seed(0), same_shift=True)
    assert torch.equal(same[0]["cam"], same[1]["cam"])
    independent = enc.augment_pair(obs, next_obs, torch.Generator().manual_seed(0), same_shift=False)
    rows_equal = (independent[0]["cam"] == independent[1]["cam"]).flatten(1).all(1)
    assert not rows_equal.all()  # 64 rows all drawing equal shifts: probability 81^-64
    assert torch.equal(independent[0]["cam"], same[0]["cam"])  # obs's shifts come first from the generator
    assert independent[0]["state"] is obs["state"]  # proprio is not augmented

    # Explicit shifts reproduce a draw exactly; a reseeded generator reproduces it too.
    obs_aug, shifts = enc.augment(obs, torch.Generator().manual_seed(3))
    assert torch.equal(enc.augment(obs, shifts=shifts)[0]["cam"], obs_aug["cam"])
    assert torch.equal(enc.augment(obs, torch.Generator().manual_seed(3))[0]["cam"], obs_aug["cam"])

    off = ObservationEncoder(space, EncoderConfig(pad=0))
    assert off.augment(obs)[0]["cam"] is obs["cam"]


def test_critic_loss_trains_the_encoder_and_detached_actor_features_do_not():
    enc = ObservationEncoder(TWO_CAMERAS, EncoderConfig(feature_dim=8, proprio_dim=4))
    critic, actor = torch.nn.Linear(enc.out_dim, 1), torch.nn.Linear(enc.out_dim, 2)
    features = enc(sample(TWO_CAMERAS, 4))

    actor(features.detach()).square().sum().backward()
    assert actor.weight.grad is not None
    assert all(p.grad is None for p in enc.parameters())

    critic(features).square().sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_spatial_softmax_finds_a_peak_and_spatial_embedding_weights_positions():
    softmax = SpatialSoftmax(height=5, width=7)
    features = torch.zeros(1, 2, 5, 7)
    features[0, 0, 1, 3] = 100.0  # channel 0 peaks at row 1, column 3
    features[0, 1, 4, 0] = 100.0  # channel 1 at row 4, column 0
    # x of every channel, then y; positions are linspace(-1, 1): column 3 of 7 -> 0, row 1 of 5 -> -0.5.
    assert torch.allclose(softmax(features), torch.tensor([[0.0, -1.0, -0.5, 1.0]]), atol=1e-6)

    embedding = SpatialEmbedding(channels=2, height=2, width=3, num_features=4)
    x = torch.randn(5, 2, 2, 3)
    by_hand = (x[..., None] * embedding.kernel[None]).sum((2, 3))  # (B, C, n)
    assert torch.allclose(embedding(x), by_hand.flatten(1), atol=1e-6)


@pytest.mark.parametrize(
    ("backbone", "kind"), [(lambda: ResNet10(3, filters=8), "resnet10"), (lambda: ConvTrunk(3, 16), "conv")]
)
def test_frozen_backbone_is_loaded_from_a_local_file(tmp_path, backbone, kind):
    saved = backbone()
    path = tmp_path / "backbone.pt"
    torch.save(saved.state_dict(), path)
    filters = 8 if kind == "resnet10" else 16
    space = gym.spaces.Dict({"cam": camera(84), "state": proprio(3)})
    enc = ObservationEncoder(
        space, EncoderConfig(kind=kind, filters=filters, weights=str(path), head="spatial_embedding")
    )
    loaded = enc.cameras["cam"].backbone
    for (name, p), (saved_name, q) in zip(loaded.named_parameters(), saved.named_parameters(), strict=True):
        assert name == saved_name and not p.requires_grad and torch.equal(p, q)
    enc(sample(space, 2)).sum().backward()
    assert all(p.grad is None for p in loaded.parameters())
    head_and_proprio = [p for n, p in enc.named_parameters() if ".backbone." not in n]
    assert head_and_proprio and all(p.requires_grad and p.grad is not None for p in head_and_proprio)


def _refusal(space: gym.Space, cfg: EncoderConfig) -> str:
    with pytest.raises(ValueError) as info:
        ObservationEncoder(space, cfg)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("space", "cfg", "expected"),
    [
        (camera(), EncoderConfig(), "image encoders take a Dict"),
        (gym.spaces.Dict({"cam": gym.spaces.Box(0, 255, (3, 84, 84), np.uint8)}), EncoderConfig(), "'cam'"),
        (gym.spaces.Dict({"cam": gym.spaces.Box(0, 1, (84, 84, 3), np.float32)}), EncoderConfig(), "'cam'"),
        (gym.spaces.Dict({"cam": camera(), "mode": gym.spaces.Discrete(3)}), EncoderConfig(), "'mode'"),
        (gym.spaces.Dict({"cam": camera()}), EncoderConfig(frame_stack=3), "(3, H, W, C)"),
        (gym.spaces.Dict({"state": proprio()}), EncoderConfig(), "no camera image"),
        (gym.spaces.Dict({"cam": camera()}), EncoderConfig(keys=["wrist"]), "encoder.keys: ['wrist']"),
        (gym.spaces.Dict({"cam": camera()}), EncoderConfig(kind="vit"), "encoder.kind='vit': not one of"),
        (gym.spaces.Dict({"cam": camera()}), EncoderConfig(head="avg"), "encoder.head='avg': not one of"),
        (gym.spaces.Dict({"cam": camera()}), EncoderConfig(kind="resnet10"), "needs encoder.weights"),
        (gym.spaces.Dict({"cam": camera()}), EncoderConfig(pad=-1), "encoder.pad=-1"),
        (gym.spaces.Dict({"cam": camera(8)}), EncoderConfig(), "8x8 images are too small"),
    ],
)
def test_spaces_and_configs_it_cannot_take_are_refused_in_one_line(space, cfg, expected):
    message = _refusal(space, cfg)
    assert expected in message
    if message.startswith("observation space"):  # names the space and what it takes instead
        assert "accepted" in message and "uint8 Box" in message and "float Box" in message


def test_bad_weights_files_are_refused_naming_the_file(tmp_path):
    space = gym.spaces.Dict({"cam": camera()})
    missing = tmp_path / "missing.pt"
    assert f"encoder.weights={missing}: no such file" in _refusal(
        space, EncoderConfig(kind="resnet10", weights=str(missing))
    )
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not torch")
    assert f"encoder.weights={garbage}: not a torch state_dict" in _refusal(
        space, EncoderConfig(kind="resnet10", weights=str(garbage))
    )
    other = tmp_path / "conv.pt"
    torch.save(ConvTrunk(3, 32).state_dict(), other)
    message = _refusal(space, EncoderConfig(kind="resnet10", filters=8, weights=str(other)))
    assert f"encoder.weights={other}: does not fit the ResNet10 backbone (missing" in message
    narrower = _refusal(space, EncoderConfig(kind="conv", filters=16, weights=str(other)))
    assert "0.weight is (32, 3, 3, 3) not (16, 3, 3, 3)" in narrower
