"""Multi-layer perceptrons, single and ensembled.

Layer order is Dense -> LayerNorm (optional) -> ReLU, as in WSRL/RLPD. Hidden layers use
orthogonal init with gain sqrt(2); the output layer uses gain ``output_gain`` (1e-2 by default,
WSRL's small final init, so fresh critics and policies start near zero instead of at a random scale).

Under reduced precision (``precision=bf16``: the update runs in ``torch.autocast``) the hidden layers
compute in bfloat16 and the output layer in float32: bfloat16 keeps 8 significant bits, so a Q-value
of 300 would move in steps of 2, coarser than the TD errors the critic learns from. The output layer
is one narrow matmul, so keeping it in float32 costs almost nothing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ObservationNormalizer(nn.Module):
    """``(obs - mean) / std`` with fixed statistics (from the dataset), saved with the network."""

    def __init__(self, dim: int, mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer(
            "mean", torch.zeros(dim) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        )
        self.register_buffer(
            "std", torch.ones(dim) if std is None else torch.as_tensor(std, dtype=torch.float32)
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.mean) / self.std


class OutputLinear(nn.Linear):
    """An MLP's last Dense: float32 even under autocast (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_autocast_enabled(x.device.type):  # fp32 runs and acting: the plain Linear
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


class MLP(nn.Sequential):
    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int,
        layer_norm: bool = False,
        output_gain: float = 1e-2,
    ) -> None:
        def linear(d_in: int, d_out: int, gain: float, output: bool) -> nn.Module:
            return _orthogonal((OutputLinear if output else nn.Linear)(d_in, d_out), gain)

        super().__init__(*_layers(in_dim, hidden, out_dim, layer_norm, output_gain, linear, nn.LayerNorm))


def _layers(
    in_dim: int,
    hidden: Sequence[int],
    out_dim: int,
    layer_norm: bool,
    output_gain: float,
    linear: Callable[[int, int, float, bool], nn.Module],
    norm: Callable[[int], nn.Module],
) -> list[nn.Module]:
    """Dense -> (LayerNorm) -> ReLU per hidden layer, then the output Dense with ``output_gain``."""
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden]
    for d_in, d_out in itertools.pairwise(dims):
        layers.append(linear(d_in, d_out, math.sqrt(2), False))
        if layer_norm:
            layers.append(norm(d_out))
        # In place: neither a Dense's nor a LayerNorm's backward needs its own output, and a fresh
        # (members, rows, 256) tensor per ReLU cost ~2.5 ms of a 9 ms layer in the CQL proposals' pass.
        layers.append(nn.ReLU(inplace=True))
    layers.append(linear(dims[-1], out_dim, output_gain, True))
    return layers


def _orthogonal(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class EnsembleLinear(nn.Module):
    """``members`` independent linear layers evaluated in one batched matmul.

    Input ``(B, in)`` (the same input for every member) or ``(members, B, in)``; output
    ``(members, B, out)``. Weights are stacked as ``(members, in, out)``, so the whole ensemble is one
    ``baddbmm``, never a Python loop over modules.
    """

    def __init__(self, members: int, in_dim: int, out_dim: int, gain: float, output: bool = False) -> None:
        super().__init__()
        self.full_precision = output
        """The ensemble's last layer computes in float32 even under autocast (see the module docstring)."""
        weight = torch.empty(members, in_dim, out_dim)
        for w in weight:  # init only: each member gets its own orthogonal matrix
            nn.init.orthogonal_(w, gain)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(members, 1, out_dim))

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        """``members`` (indices) evaluates only those members, e.g. the critics a CQL term touches."""
        weight, bias = (
            (self.weight, self.bias) if members is None else (self.weight[members], self.bias[members])
        )
        if x.dim() == 2:
            # One baddbmm over a stride-0 view of the shared input: ``matmul(x, weight) + bias``
            # broadcasts through a copy of x per member and a separate add, and its backward reduces
            # the broadcast; 2.7x slower for CQL's (2, 7680, 23) first layer, forward+backward.
            x = x.expand(weight.shape[0], *x.shape)
        if self.full_precision and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return torch.baddbmm(bias, x.float(), weight)
        return torch.baddbmm(bias, x, weight)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm with separate affine parameters per member (inputs ``(members, B, dim)``)."""

    def __init__(self, members: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, 1, dim))
        self.bias = nn.Parameter(torch.zeros(members, 1, dim))

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        weight, bias = (
            (self.weight, self.bias) if members is None else (self.weight[members], self.bias[members])
        )
        return torch.addcmul(bias, F.layer_norm(x, x.shape[-1:]), weight)


class EnsembleMLP(nn.Module):
    """``members`` MLPs of the same shape, stacked: ``(B, in)`` -> ``(members, B, out)``."""

    def __init__(
        self,
        members: int,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int,
        layer_norm: bool = False,
        output_gain: float = 1e-2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            _layers(
                in_dim,
                hidden,
                out_dim,
                layer_norm,
                output_gain,
                lambda d_in, d_out, gain, output: EnsembleLinear(members, d_in, d_out, gain, output),
                lambda dim: EnsembleLayerNorm(members, dim),
            )
        )
        self.members = members

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x) if isinstance(layer, nn.ReLU) else layer(x, members)
        return x
