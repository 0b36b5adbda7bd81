"""Offline datasets: one ``Dataset`` type, loaders (Minari, D4RL hdf5), checks and scores."""

from rl.data.dataset import Dataset, DatasetInfo, mc_return_to_go
from rl.data.loaders import check_dataset, load_d4rl_hdf5, load_dataset, load_minari
from rl.data.scores import D4RL_REF_SCORES, ScoreNormalizer

__all__ = [
    "D4RL_REF_SCORES",
    "Dataset",
    "DatasetInfo",
    "ScoreNormalizer",
    "check_dataset",
    "load_d4rl_hdf5",
    "load_dataset",
    "load_minari",
    "mc_return_to_go",
]
