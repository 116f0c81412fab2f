"""Data for Bayesian data point selection: train/meta/test containers, corruptions, file readers, scenarios."""

from pyro_dps.data.builders import cifar10_noisy_splits, digits_splits, mnist_4v9_splits, mnist_like_noisy_splits
from pyro_dps.data.corruption import (
    CIFAR10_ASYMMETRIC,
    MNIST_ASYMMETRIC,
    asymmetric_noise,
    binary_imbalance,
    long_tail,
    long_tail_counts,
    symmetric_noise,
)
from pyro_dps.data.files import ImageFolder, NpyRows, image_folder, image_to_tensor, npy_rows
from pyro_dps.data.loaders import (
    CIFAR10_CLASS_NAMES,
    DATA_ENV_VAR,
    channel_stats,
    data_file,
    images_to_float,
    load_cifar10,
    load_cifar10_batches,
    load_idx,
    load_mnist,
    load_mnist_idx,
    load_npz,
)
from pyro_dps.data.rows import DatasetRows, read_iterable
from pyro_dps.data.splits import DataSplits, from_arrays, from_datasets
from pyro_dps.data.stratified import stratified_split
from pyro_dps.data.tables import HFRows, TableRows, hf_rows, table_rows
from pyro_dps.data.text import REVIEW_DOMAINS, load_reviews, mean_weight_by_domain, reviews_splits

__all__ = [
    "CIFAR10_ASYMMETRIC",
    "CIFAR10_CLASS_NAMES",
    "DATA_ENV_VAR",
    "MNIST_ASYMMETRIC",
    "REVIEW_DOMAINS",
    "DataSplits",
    "DatasetRows",
    "HFRows",
    "ImageFolder",
    "NpyRows",
    "TableRows",
    "asymmetric_noise",
    "binary_imbalance",
    "channel_stats",
    "cifar10_noisy_splits",
    "data_file",
    "digits_splits",
    "from_arrays",
    "from_datasets",
    "hf_rows",
    "image_folder",
    "image_to_tensor",
    "images_to_float",
    "load_cifar10",
    "load_cifar10_batches",
    "load_idx",
    "load_mnist",
    "load_mnist_idx",
    "load_npz",
    "load_reviews",
    "long_tail",
    "long_tail_counts",
    "mean_weight_by_domain",
    "mnist_4v9_splits",
    "mnist_like_noisy_splits",
    "npy_rows",
    "read_iterable",
    "reviews_splits",
    "stratified_split",
    "symmetric_noise",
    "table_rows",
]
