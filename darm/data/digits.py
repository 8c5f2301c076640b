"""The 8x8 digits of scikit-learn: 1797 images, 17 grey levels (0..16), D = 64."""

from __future__ import annotations

import numpy as np

from darm.data.arrays import make_dataset
from darm.data.dataset import Dataset

# the split of the reference causal-conv ARM (Tomczak, "Autoregressive Models")
DIGITS_SPLIT = (1000, 350, 447)


def digits_dataset(seed: int = 42) -> Dataset:
    from sklearn.datasets import load_digits  # shipped inside the wheel: no download

    digits = load_digits()
    x = digits.images.astype(np.int64)  # (1797, 8, 8), values 0..16
    y = digits.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(x))
    n_train, n_valid, _ = DIGITS_SPLIT
    idx = {
        "train": perm[:n_train],
        "valid": perm[n_train : n_train + n_valid],
        "test": perm[n_train + n_valid :],
    }
    return make_dataset(
        "digits",
        {s: x[i] for s, i in idx.items()},
        {s: y[i] for s, i in idx.items()},
        17,
        (8, 8),
        {"format": "builtin", "name": "digits", "seed": seed},
        f"scikit-learn 8x8 digits, seeded ({seed}) split 1000/350/447, 17 levels",
    )
