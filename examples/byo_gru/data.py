"""A small sequence task generated in code: what a `data.loader` returns.

Each example is k steps of Gaussian noise in `features` channels; an example of class c carries
a pulse (+`strength` for 3 consecutive steps) in channel c at a random time. Telling the classes
apart needs the network to notice and remember the pulse until the last step.
"""

import numpy as np


def load(examples: int = 1200, steps: int = 20, features: int = 6, classes: int = 4,
         strength: float = 1.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((examples, steps, features)).astype(np.float32)
    y = rng.integers(0, classes, size=examples)
    start = rng.integers(0, steps - 3, size=examples)
    for offset in range(3):
        x[np.arange(examples), start + offset, y] += strength
    return x, y  # the tool makes the stratified train/test split (data.test_fraction)
