"""The transfer set's order scheme "fisher-yates-mt19937_64/v1", in NumPy.

The same example ids as common/formats/contract.cc's ShardExampleIds: epoch
e of a set of n examples is a Fisher-Yates shuffle (i from n-1 down to 1,
swapped with a uniform j in [0, i], drawn by rejection from std::mt19937_64
seeded with SplitMix64(seed ^ SplitMix64(e))); shard s of k takes the
positions p with p % k == s; batch b of size B is the shard's [b*B, (b+1)*B).
"""

from typing import List

import numpy as np

ORDER_SCHEME = "fisher-yates-mt19937_64/v1"

_MASK = (1 << 64) - 1
_N, _M = 312, 156
_MATRIX_A = np.uint64(0xB5026F5AA96619E9)
_UPPER = np.uint64(0xFFFFFFFF80000000)
_LOWER = np.uint64(0x7FFFFFFF)


def splitmix64(x: int) -> int:
    """common/util/random.h's SplitMix64."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class MT19937_64:
    """std::mt19937_64, drawing blocks of 312 outputs with NumPy."""

    def __init__(self, seed: int):
        state = [seed & _MASK]
        for i in range(1, _N):
            prev = state[-1]
            state.append((6364136223846793005 * (prev ^ (prev >> 62)) + i) & _MASK)
        self._state = np.array(state, dtype=np.uint64)

    def _twist(self) -> None:
        x = self._state
        one = np.uint64(1)
        # i in [0, n-m): x[i+1] and x[i+m] are still the old values.
        y = (x[:_N - _M] & _UPPER) | (x[1:_N - _M + 1] & _LOWER)
        x[:_N - _M] = x[_M:] ^ (y >> one) ^ np.where(y & one, _MATRIX_A, np.uint64(0))
        # i in [n-m, n-1): x[i+m-n] was updated above, x[i+1] is old.
        y = (x[_N - _M:_N - 1] & _UPPER) | (x[_N - _M + 1:] & _LOWER)
        x[_N - _M:_N - 1] = (x[:_M - 1] ^ (y >> one)
                             ^ np.where(y & one, _MATRIX_A, np.uint64(0)))
        y = (x[_N - 1] & _UPPER) | (x[0] & _LOWER)
        x[_N - 1] = x[_M - 1] ^ (y >> one) ^ (_MATRIX_A if int(y) & 1 else np.uint64(0))

    def block(self) -> np.ndarray:
        """The next 312 outputs."""
        self._twist()
        y = self._state.copy()
        y ^= (y >> np.uint64(29)) & np.uint64(0x5555555555555555)
        y ^= (y << np.uint64(17)) & np.uint64(0x71D67FFFEDA60000)
        y ^= (y << np.uint64(37)) & np.uint64(0xFFF7EEE000000000)
        y ^= y >> np.uint64(43)
        return y


def shuffled_indices(n: int, seed: int, epoch: int) -> List[int]:
    """common/data/dataset.cc's ShuffledIndices(n, seed, epoch)."""
    if n <= 0:
        return []
    rng = MT19937_64(splitmix64((seed ^ splitmix64(epoch & _MASK)) & _MASK))
    steps = n - 1
    draws = np.concatenate([rng.block() for _ in range((steps + _N - 1) // _N)] or
                           [np.zeros(0, np.uint64)])[:steps]
    bounds = np.arange(n, 1, -1, dtype=np.uint64)  # i + 1 for i = n-1 .. 1
    thresholds = (np.uint64(0) - bounds) % bounds  # 2^64 mod bound
    if (draws < thresholds).any():
        # A rejected draw (odds about n / 2^64): draw by draw, exactly.
        return _shuffled_indices_exact(n, seed, epoch)
    order = list(range(n))
    for i, j in zip(range(n - 1, 0, -1), (draws % bounds).tolist()):
        order[i], order[j] = order[j], order[i]
    return order


def _shuffled_indices_exact(n: int, seed: int, epoch: int) -> List[int]:
    order = list(range(n))
    rng = MT19937_64(splitmix64((seed ^ splitmix64(epoch & _MASK)) & _MASK))
    draws: List[int] = []
    pos = 0
    for i in range(n - 1, 0, -1):
        bound = i + 1
        threshold = ((1 << 64) - bound) % bound  # 2^64 mod bound
        while True:
            if pos == len(draws):
                draws = rng.block().tolist()
                pos = 0
            r = draws[pos]
            pos += 1
            if r >= threshold:
                break
        j = r % bound
        order[i], order[j] = order[j], order[i]
    return order


def shard_example_ids(size: int, epoch: int, seed: int, shard: int,
                      num_shards: int) -> np.ndarray:
    """The example ids of shard `shard` of `num_shards` of `epoch`, in order."""
    if num_shards < 1 or shard >= num_shards or num_shards > size:
        raise ValueError(f"shard {shard} of {num_shards} does not exist for a transfer set of "
                         f"{size} examples")
    return np.array(shuffled_indices(size, seed, epoch)[shard::num_shards], dtype=np.uint64)
