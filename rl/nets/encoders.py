"""Image encoders for pixel observations, shared by every agent and the reward classifier.

Image layout. o2o keeps camera images channel-last, as robosuite, gymnasium and Minari give them:
one uint8 ``(H, W, C)`` image per camera key, and ``(k, H, W, C)`` for ``k`` stacked frames (the
layout of gymnasium's ``FrameStackObservation``, which also turns a ``(D,)`` proprio vector into
``(k, D)``). Channel-first ``(C, H, W)`` spaces are refused, never guessed. The encoder moves the
channels first on the device and stacks frames along channels, oldest first: ``(B, k * C, H, W)``.

Pieces, each usable alone:
- ``ImageEncoder``: one camera, uint8 ``(B, C, H, W)`` -> ``(B, feature_dim)``. A backbone (the
  DrQ/SAC-AE conv stack, or a small ResNet-10 loaded frozen from a local weights file) and a head:
  ``flatten`` (DrQ), ``spatial_softmax`` (one expected (x, y) keypoint per channel) or
  ``spatial_embedding`` (SERL's learned spatial embeddings); every head ends in Linear -> LayerNorm ->
  tanh, so features are bounded whatever the head.
- ``ObservationEncoder``: a gymnasium ``Dict`` of cameras and proprio vectors -> one feature vector,
  ``out_dim`` known when it is built. It also owns the random-shift augmentation.
- ``draw_shifts`` / ``shift_images``: DrQ's random shift (replicate-pad ``pad`` pixels, crop back at a
  random integer offset), one gather per axis on the device, exact on uint8 frames.

Use in the off-policy agents (DrQ's sharing; wired once in ``rl/agents/encoding.py``, not here):
- The critic owns the ``ObservationEncoder`` (``CriticEnsemble.encoder``), and the critic's loss trains it.
- Encode each augmented batch once; the actor reads those features ``.detach()``-ed, so no actor
  gradient reaches the encoder (DrQ-v2 detaches the whole encoder output; DrQ-v1 detaches the conv
  output and trains a separate actor head on the critic's tied conv weights).
- The target critic has its own encoder, a ``copy.deepcopy`` of the online one, Polyak-averaged with
  ``rl.agents.base.polyak_update`` (a frozen backbone's weights are equal in both, so averaging leaves
  them unchanged). DrQ-v1 averages the whole critic, encoder included, with tau 0.01 every second
  step; SAC-AE uses tau 0.05 for the encoder and 0.01 for the Q heads; DrQ-v2 has no target encoder
  (it encodes next observations with the online encoder under ``no_grad``).
- Augment obs and next obs with independent shifts (DrQ and DrQ-v2 both draw them independently);
  ``augment_pair(..., same_shift=True)`` applies one shift to both where a method wants the
  transition seen through the same crop.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("conv", "resnet10")
HEADS = ("flatten", "spatial_softmax", "spatial_embedding")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class EncoderConfig:
    kind: str = "conv"
    """``conv``: DrQ/SAC-AE's 4 conv layers (3x3, first stride 2, no padding), trained from scratch.
    ``resnet10``: SERL's ResNet-10 layout (GroupNorm), only with ``weights``; RGB input normalised with
    the ImageNet mean and std, as ImageNet-pretrained weights expect."""
    feature_dim: int = 50
    """Features per camera (DrQ 50; SERL's bottleneck 256)."""
    filters: int = 32
    """conv: channels of every layer (DrQ 32). resnet10: channels of the first stage, doubled at each
    of the next three (ResNet-10: 64)."""
    head: str = "flatten"
    """``flatten`` (DrQ), ``spatial_softmax`` or ``spatial_embedding`` (SERL)."""
    spatial_features: int = 8
    """spatial_embedding: learned spatial maps per backbone channel (SERL and HIL-SERL: 8)."""
    frame_stack: int = 1
    """Frames per camera observation: cameras must then be ``(frame_stack, H, W, C)`` spaces."""
    pad: int = 4
    """Random-shift augmentation: pixels of replicate padding, the largest shift (DrQ 4); 0 = off."""
    weights: str | None = None
    """A local file holding the backbone's ``state_dict``; the backbone is then loaded and frozen."""
    proprio_dim: int = 64
    """Proprio vectors go through Linear -> LayerNorm -> tanh to this width (SERL: 64), then are
    concatenated after the camera features; 0 concatenates them raw."""
    keys: list[str] | None = None
    """Observation keys to encode, in this order; None takes every key of the space, in its order
    (a reward classifier that sees only cameras lists the camera keys)."""


def check_config(cfg: EncoderConfig) -> None:
    """Refuse a bad encoder config with one line naming the field."""
    if cfg.kind not in KINDS:
        raise ValueError(f"encoder.kind={cfg.kind!r}: not one of {', '.join(KINDS)}")
    if cfg.head not in HEADS:
        raise ValueError(f"encoder.head={cfg.head!r}: not one of {', '.join(HEADS)}")
    if cfg.kind == "resnet10" and cfg.weights is None:
        raise ValueError(
            "encoder.kind=resnet10 needs encoder.weights=<state_dict file> (it is only used frozen and "
            "pretrained, never downloaded); use encoder.kind=conv to train from scratch"
        )
    for name in ("feature_dim", "filters", "spatial_features", "frame_stack"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"encoder.{name}={getattr(cfg, name)}: must be at least 1")
    for name in ("pad", "proprio_dim"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"encoder.{name}={getattr(cfg, name)}: must be 0 or more")


# -- random shift ------------------------------------------------------------------------------------


def draw_shifts(
    batch: int, pad: int, generator: torch.Generator | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """``(batch, 2)`` int64 crop offsets ``(dy, dx)``, uniform in ``[0, 2 * pad]``: the corner of the
    crop in the padded image, so the image moves by ``offset - pad`` pixels.

    Drawn on the generator's device (its state alone decides the draw, so a seeded or checkpointed
    generator reproduces it), then moved to ``device``.
    """
    where = generator.device if generator is not None else device
    shifts = torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator, device=where)
    return shifts.to(device) if device is not None else shifts


def shift_images(images: torch.Tensor, shifts: torch.Tensor, pad: int) -> torch.Tensor:
    """Crop ``images`` (``(B, ..., H, W, C)``, channel-last, any dtype) out of their replicate-padded
    copy at ``shifts`` (from ``draw_shifts``); the same shift for everything a row holds (all stacked
    frames of a camera).

    Replicate padding followed by a crop at offset ``o`` reads row ``clamp(i + o - pad, 0, H - 1)``
    (and likewise for columns), so the padded image is never built: one gather of ``H * W`` pixels.
    """
    b, h, w, c = images.shape[0], *images.shape[-3:]
    rows = (torch.arange(h, device=images.device) + shifts[:, :1] - pad).clamp_(0, h - 1)  # (B, H)
    cols = (torch.arange(w, device=images.device) + shifts[:, 1:] - pad).clamp_(0, w - 1)  # (B, W)
    pixels = (rows[:, :, None] * w + cols[:, None, :]).view(b, 1, h * w, 1)
    x = images.reshape(b, -1, h * w, c)  # (B, frames, H * W, C)
    return x.gather(2, pixels.expand(-1, x.shape[1], -1, c)).reshape(images.shape)


# -- backbones ---------------------------------------------------------------------------------------


def _orthogonal(module: nn.Module, gain: float) -> nn.Module:
    nn.init.orthogonal_(module.weight, gain)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


class ConvTrunk(nn.Sequential):
    """DrQ/SAC-AE: 4 conv layers of ``filters`` 3x3 filters, the first with stride 2, no padding, ReLU
    (84x84 -> 35x35). Orthogonal init with the ReLU gain (DrQ-v2)."""

    def __init__(self, in_channels: int, filters: int = 32) -> None:
        layers: list[nn.Module] = []
        for i in range(4):
            conv = nn.Conv2d(in_channels if i == 0 else filters, filters, 3, stride=2 if i == 0 else 1)
            layers += [_orthogonal(conv, nn.init.calculate_gain("relu")), nn.ReLU()]
        super().__init__(*layers)


class _BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(4, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(4, channels)
        self.project = None
        if stride != 1 or in_channels != channels:
            self.project = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.GroupNorm(4, channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x)))))
        return F.relu(y + (x if self.project is None else self.project(x)))


class ResNet10(nn.Sequential):
    """SERL's ResNet-10 without pooling: a 7x7 stride-2 stem, GroupNorm(4), 3x3 max pool, then one
    basic block per stage at ``filters * (1, 2, 4, 8)`` channels (stride 2 from the second stage).
    84x84 -> 3x3. Its ``state_dict`` keys are the layout ``encoder.weights`` files must hold."""

    def __init__(self, in_channels: int, filters: int = 64) -> None:
        widths = [filters * 2**i for i in range(4)]
        super().__init__(
            nn.Conv2d(in_channels, filters, 7, 2, 3, bias=False),
            nn.GroupNorm(4, filters),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
            *(
                _BasicBlock(c_in, c, 1 if c == filters else 2)
                for c_in, c in itertools.pairwise([filters, *widths])
            ),
        )


def load_frozen(backbone: nn.Module, path: str) -> None:
    """Load ``backbone``'s weights from a local ``state_dict`` file and freeze them; a missing,
    unreadable or mismatched file is refused in one line naming it."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"encoder.weights={path}: no such file")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling failure means the same thing here
        raise ValueError(f"encoder.weights={path}: not a torch state_dict ({type(err).__name__})") from None
    expected = backbone.state_dict()
    if not isinstance(state, dict):
        raise ValueError(f"encoder.weights={path}: holds a {type(state).__name__}, not a state_dict")
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    wrong = [k for k in expected.keys() & state.keys() if tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(
            part
            for part in (
                f"missing {missing[:3]}" if missing else "",
                f"unexpected {unexpected[:3]}" if unexpected else "",
                ", ".join(
                    f"{k} is {tuple(state[k].shape)} not {tuple(expected[k].shape)}"
                    for k in sorted(wrong)[:3]
                ),
            )
            if part
        )
        raise ValueError(
            f"encoder.weights={path}: does not fit the {type(backbone).__name__} backbone ({detail})"
        )
    backbone.load_state_dict(state)
    backbone.requires_grad_(False)


# -- heads -------------------------------------------------------------------------------------------


class SpatialSoftmax(nn.Module):
    """Per channel, a softmax over the ``h * w`` positions (with a learned temperature) and the expected
    ``(x, y)`` under it, positions in ``[-1, 1]``: ``(B, F, h, w) -> (B, 2F)``, x of every channel
    first, then y."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        self.register_buffer("positions", torch.stack([xs.reshape(-1), ys.reshape(-1)], 1))  # (h*w, 2)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        attention = torch.softmax(features.flatten(2) / self.log_temperature.exp(), dim=-1)  # (B, F, h*w)
        return (attention @ self.positions).transpose(1, 2).flatten(1)


class SpatialEmbedding(nn.Module):
    """SERL's learned spatial embeddings: per channel ``c`` and map ``n``, ``sum_hw x[c, h, w] K[c, h,
    w, n]``: ``(B, F, h, w) -> (B, F * n)`` (channel-major)."""

    def __init__(self, channels: int, height: int, width: int, num_features: int) -> None:
        super().__init__()
        # Unit-variance outputs for unit-variance inputs; the LayerNorm after the bottleneck rescales anyway.
        self.kernel = nn.Parameter(
            torch.randn(channels, height, width, num_features) / math.sqrt(height * width)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,chwn->bcn", features, self.kernel).flatten(1)


class ImageEncoder(nn.Module):
    """One camera: uint8 ``(B, C, H, W)`` -> ``(B, feature_dim)`` (Linear -> LayerNorm -> tanh after the
    head). Pixels are scaled to ``[0, 1]`` here (and ImageNet-normalised for ``resnet10``)."""

    def __init__(self, in_channels: int, height: int, width: int, cfg: EncoderConfig) -> None:
        super().__init__()
        check_config(cfg)
        if cfg.kind == "conv":
            self.backbone: nn.Module = ConvTrunk(in_channels, cfg.filters)
            mean, std = torch.zeros(in_channels), torch.ones(in_channels)
        else:
            if in_channels % 3:
                raise ValueError(
                    f"encoder.kind=resnet10 takes RGB frames (3 channels each), got {in_channels} channels"
                )
            self.backbone = ResNet10(in_channels, cfg.filters)
            mean = torch.tensor(IMAGENET_MEAN).repeat(in_channels // 3)
            std = torch.tensor(IMAGENET_STD).repeat(in_channels // 3)
        # x / 255 then (x - mean) / std, folded into one multiply-add.
        self.register_buffer("scale", (1 / (255 * std)).view(1, -1, 1, 1))
        self.register_buffer("shift", (-mean / std).view(1, -1, 1, 1))
        self.frozen = cfg.weights is not None
        if self.frozen:
            load_frozen(self.backbone, cfg.weights)
        try:
            with torch.no_grad():
                channels, h, w = self.backbone(torch.zeros(1, in_channels, height, width)).shape[1:]
        except RuntimeError:
            raise ValueError(
                f"encoder.kind={cfg.kind}: {height}x{width} images are too small for its backbone"
            ) from None
        if cfg.head == "flatten":
            self.head: nn.Module = nn.Flatten()
            head_dim = channels * h * w
        elif cfg.head == "spatial_softmax":
            self.head = SpatialSoftmax(h, w)
            head_dim = 2 * channels
        else:
            self.head = SpatialEmbedding(channels, h, w, cfg.spatial_features)
            head_dim = channels * cfg.spatial_features
        self.project = nn.Sequential(
            _orthogonal(nn.Linear(head_dim, cfg.feature_dim), 1.0), nn.LayerNorm(cfg.feature_dim), nn.Tanh()
        )
        self.out_dim = cfg.feature_dim

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's output ``(B, F, h, w)``, without gradient when the backbone is frozen."""
        x = torch.addcmul(self.shift, images.float(), self.scale)
        if self.frozen:
            with torch.no_grad():
                return self.backbone(x)
        return self.backbone(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.head(self.feature_map(images)))


# -- Dict observations -------------------------------------------------------------------------------


def _accepted(k: int) -> str:
    if k == 1:
        return (
            "accepted: a camera as an (H, W, C) uint8 Box with C <= 4 (o2o's channel-last layout, "
            "not (C, H, W)), or proprio as a (D,) float Box"
        )
    return (
        f"accepted with encoder.frame_stack={k}: a camera as a ({k}, H, W, C) uint8 Box with C <= 4, "
        f"or proprio as a ({k}, D) float Box"
    )


class ObservationEncoder(nn.Module):
    """A ``Dict`` observation of one or more cameras and proprio vectors -> ``(B, out_dim)``: each
    camera through its own ``ImageEncoder``, then the proprio vectors (projected, see
    ``EncoderConfig.proprio_dim``), concatenated in ``cfg.keys`` order, cameras first.

    ``forward`` takes a dict of tensors with a leading batch axis, laid out as the space says: uint8
    cameras ``(B, H, W, C)`` or ``(B, k, H, W, C)``, float proprio ``(B, D)`` or ``(B, k, D)``.
    """

    def __init__(self, space: gym.Space, cfg: EncoderConfig) -> None:
        super().__init__()
        check_config(cfg)
        if not isinstance(space, gym.spaces.Dict):
            raise ValueError(
                f"observation space {space}: image encoders take a Dict of cameras and proprio vectors; "
                f"{_accepted(cfg.frame_stack)}"
            )
        keys = list(space.spaces) if cfg.keys is None else list(cfg.keys)
        unknown = [k for k in keys if k not in space.spaces]
        if unknown:
            raise ValueError(
                f"encoder.keys: {unknown} not in the observation space (keys: {list(space.spaces)})"
            )
        self.cfg = cfg
        self.cameras = nn.ModuleDict()
        self.proprio_keys: list[str] = []
        proprio_dim = 0
        for key in keys:
            sub = space.spaces[key]
            kind = self._classify(key, sub, cfg.frame_stack)
            if kind == "camera":
                h, w, c = sub.shape[-3:]
                self.cameras[key] = ImageEncoder(c * cfg.frame_stack, h, w, cfg)
            else:
                self.proprio_keys.append(key)
                proprio_dim += int(np.prod(sub.shape))
        if not self.cameras:
            raise ValueError(
                f"observation space {space}: no camera image among {keys}; state-only observations use "
                f"the MLP agents without an encoder ({_accepted(cfg.frame_stack)})"
            )
        self.proprio: nn.Module | None = None
        if proprio_dim and cfg.proprio_dim:
            self.proprio = nn.Sequential(
                _orthogonal(nn.Linear(proprio_dim, cfg.proprio_dim), 1.0),
                nn.LayerNorm(cfg.proprio_dim),
                nn.Tanh(),
            )
            proprio_dim = cfg.proprio_dim
        self.out_dim = sum(encoder.out_dim for encoder in self.cameras.values()) + proprio_dim
        """Length of the feature vector, known at build time."""

    @staticmethod
    def _classify(key: str, sub: gym.Space, k: int) -> str:
        """``camera`` or ``proprio``, or a one-line refusal naming the space and the choices."""
        if isinstance(sub, gym.spaces.Box):
            shape = sub.shape
            if sub.dtype == np.uint8:
                camera = len(shape) == 3 if k == 1 else len(shape) == 4 and shape[0] == k
                if camera and 1 <= shape[-1] <= 4:
                    return "camera"
            elif np.issubdtype(sub.dtype, np.floating) and (
                len(shape) == 1 if k == 1 else len(shape) == 2 and shape[0] == k
            ):
                return "proprio"
        raise ValueError(f"observation space {key!r}: {sub} cannot be encoded; {_accepted(k)}")

    def _channels_first(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` or ``(B, k, H, W, C)`` -> ``(B, k * C, H, W)``, frames stacked oldest first.
        A permuted view where possible: the result is channels-last in memory, which CPU convs take."""
        if images.dim() == 5:
            b, k, h, w, c = images.shape
            images = images.permute(0, 2, 3, 1, 4).reshape(b, h, w, k * c)
        return images.permute(0, 3, 1, 2)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [encoder(self._channels_first(obs[key])) for key, encoder in self.cameras.items()]
        if self.proprio_keys:
            state = torch.cat([obs[key].flatten(1).float() for key in self.proprio_keys], dim=-1)
            parts.append(state if self.proprio is None else self.proprio(state))
        return torch.cat(parts, dim=-1)

    def augment(
        self,
        obs: dict[str, torch.Tensor],
        generator: torch.Generator | None = None,
        shifts: dict[str, torch.Tensor] | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Random-shift every camera (``cfg.pad``; an independent shift per camera and per row, the same
        one for a row's stacked frames) and return the shifted obs with the shifts used.

        Pass ``shifts`` back to apply exactly those shifts to another batch (e.g. next_obs); without
        them new ones are drawn from ``generator`` (the global generator if None). Non-camera entries
        are passed through untouched; with ``pad=0`` nothing is shifted.
        """
        if self.cfg.pad == 0:
            return obs, {}
        if shifts is None:
            first = obs[next(iter(self.cameras))]
            shifts = {
                key: draw_shifts(first.shape[0], self.cfg.pad, generator, first.device)
                for key in self.cameras
            }
        out = dict(obs)
        for key in self.cameras:
            out[key] = shift_images(obs[key], shifts[key], self.cfg.pad)
        return out, shifts

    def augment_pair(
        self,
        obs: dict[str, torch.Tensor],
        next_obs: dict[str, torch.Tensor],
        generator: torch.Generator | None = None,
        same_shift: bool = False,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Shift a transition's obs and next obs: independently (DrQ, DrQ-v2; the default) or, with
        ``same_shift``, both by the shift drawn for obs."""
        obs_aug, shifts = self.augment(obs, generator)
        next_aug, _ = self.augment(next_obs, generator, shifts if same_shift else None)
        return obs_aug, next_aug
