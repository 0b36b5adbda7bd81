"""Networks shared by all agents: MLPs, stacked ensembles, actors, critics."""

from rl.nets.actors import GaussianActor, TanhGaussianActor
from rl.nets.critics import CriticEnsemble, ValueNet
from rl.nets.encoders import EncoderConfig, ImageEncoder, ObservationEncoder
from rl.nets.mlp import MLP, EnsembleLinear, EnsembleMLP, ObservationNormalizer

__all__ = [
    "MLP",
    "CriticEnsemble",
    "EncoderConfig",
    "EnsembleLinear",
    "EnsembleMLP",
    "GaussianActor",
    "ImageEncoder",
    "ObservationEncoder",
    "ObservationNormalizer",
    "TanhGaussianActor",
    "ValueNet",
]
