"""Deterministic generated transactions shaped like the public credit-card fraud data set."""

import numpy as np

from app.features import N_FEATURES

TWO_DAYS_SECONDS = 172_800
FRAUD_RATE = 0.0017

# Standard deviations of V1..V28 in the public data set (PCA components, largest first).
COMPONENT_SCALES = np.array(
    [1.96, 1.65, 1.52, 1.42, 1.38, 1.33, 1.24, 1.19, 1.10, 1.09, 1.02, 1.00, 1.00, 0.96,
     0.92, 0.88, 0.85, 0.84, 0.81, 0.77, 0.73, 0.73, 0.62, 0.61, 0.52, 0.48, 0.40, 0.33]
)  # fmt: skip

# Where fraud departs from normal, in units of each component's scale (signs as in the data).
FRAUD_SHIFTS = {1: -1.4, 2: 1.3, 3: -2.6, 4: 2.2, 5: -1.3, 7: -2.6, 9: -1.4, 10: -3.0,
                11: 2.6, 12: -3.4, 14: -4.0, 16: -2.6, 17: -4.0, 18: -1.4}  # fmt: skip
_CAMOUFLAGED_FRAUD = (
    0.12  # share of fraud that looks like normal traffic, as real fraud partly does
)


def generate(
    rows: int = 200_000, seed: int = 42, fraud_rate: float = FRAUD_RATE
) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels): an (rows, 30) float64 matrix in FEATURE_NAMES order and 0/1 labels."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(rows) < fraud_rate).astype(np.int64)
    if rows >= 2 and labels.sum() < 2:
        labels[rng.choice(rows, 2, replace=False)] = 1  # stratified splits need both classes

    features = np.empty((rows, N_FEATURES), dtype=np.float64)
    features[:, 0] = np.sort(rng.uniform(0, TWO_DAYS_SECONDS, rows)).round()
    components = rng.standard_normal((rows, 28)) * COMPONENT_SCALES

    fraud = np.flatnonzero(labels)
    shifted = fraud[rng.random(fraud.size) >= _CAMOUFLAGED_FRAUD]
    strength = rng.uniform(0.4, 1.6, (shifted.size, 1))
    for component, shift in FRAUD_SHIFTS.items():
        column = component - 1
        offsets = shift * COMPONENT_SCALES[column] * strength[:, 0]
        components[shifted, column] = components[shifted, column] * 1.8 + offsets
    features[:, 1:29] = components

    amounts = rng.lognormal(mean=3.4, sigma=1.25, size=rows)
    amounts[fraud] = rng.lognormal(mean=3.0, sigma=1.9, size=fraud.size)
    features[:, 29] = np.minimum(amounts, 25_000).round(2)
    return features, labels
