"""The batch kernel over ``trees.TreeTables``: the only module that imports numba.

Rows are taken in blocks of ``BLOCK`` and transposed, so that each node's test runs over one
contiguous feature column of the block and compiles to vector compares and ANDs. Scores are
summed in tree order, in float32, as ONNX Runtime sums them. The kernel holds no GIL: the
scorer runs one call per core side by side. Compiled code is cached on disk (numba's
``cache``), so only the first run on a machine pays for compiling it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ferry.distributed.trees import TreeTables

BLOCK = 2048


class _Words:
    """A mask word's constants: all bits, and the De Bruijn sequence that finds the lowest
    set bit with one multiply, a shift and a lookup."""

    def __init__(self, dtype: type, magic: int, shift: int) -> None:
        bits = np.dtype(dtype).itemsize * 8
        full = (1 << bits) - 1
        self.all, self.one = dtype(full), dtype(1)
        self.magic, self.shift = dtype(magic), dtype(shift)
        self.positions = np.zeros(bits, dtype=np.int64)
        for bit in range(bits):
            self.positions[(((1 << bit) * magic) & full) >> shift] = bit


_WORDS = {
    np.dtype(np.uint32): _Words(np.uint32, 0x077CB531, 27),
    np.dtype(np.uint64): _Words(np.uint64, 0x03F79D71B4CB0A89, 58),
}


def raw_scores(tables: TreeTables, features: np.ndarray) -> np.ndarray:
    """Summed leaf weights [rows, targets], before the base values and post-transform."""
    rows = np.ascontiguousarray(features, dtype=np.float32)
    words = _WORDS[tables.masks.dtype]
    tree_count = tables.leaves.shape[0]
    bits = np.empty((tree_count, BLOCK), dtype=tables.masks.dtype)
    columns = np.empty((rows.shape[1], BLOCK), dtype=np.float32)
    sums = np.empty((tables.leaves.shape[2], BLOCK), dtype=np.float32)
    return _scores(
        rows,
        tables.features,
        tables.thresholds,
        tables.modes,
        tables.missing_true,
        tables.masks,
        tables.trees,
        tables.leaves,
        bits,
        columns,
        sums,
        words.all,
        words.one,
        words.magic,
        words.shift,
        words.positions,
    )


@njit(nogil=True, cache=True, boundscheck=False)
def _scores(
    rows,
    features,
    thresholds,
    modes,
    missing_true,
    masks,
    trees,
    leaves,
    bits,
    columns,
    sums,
    full,
    one,
    magic,
    shift,
    positions,
):
    n, width = rows.shape
    tree_count, _, targets = leaves.shape
    block = bits.shape[1]
    out = np.zeros((n, targets), dtype=np.float32)
    for start in range(0, n, block):
        m = min(block, n - start)
        for f in range(width):  # reads strided, writes each column contiguously
            for r in range(m):
                columns[f, r] = rows[start + r, f]
        bits[:, :m] = full
        for j in range(features.shape[0]):
            _test(
                columns[features[j]],
                thresholds[j],
                modes[j],
                missing_true[j],
                masks[j],
                bits[trees[j]],
                m,
                full,
            )
        for c in range(targets):
            total = sums[c]
            total[:m] = 0
            for t in range(tree_count):
                word, weights = bits[t], leaves[t, :, c]
                for r in range(m):
                    low = word[r] & (~word[r] + one)  # typed constants: no float promotion
                    total[r] += weights[positions[((low * magic) & full) >> shift]]
            out[start : start + m, c] = total[:m]
    return out


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _test(x, threshold, mode, missing_true, mask, word, m, full):
    # Rows failing the test take the false branch: their true-subtree leaves are cleared.
    # NaN fails every comparison, so it goes false unless the node sends it true.
    if mode == 0:
        for r in range(m):
            passed = (x[r] <= threshold) | ((x[r] != x[r]) & missing_true)
            word[r] &= full if passed else mask
    elif mode == 1:
        for r in range(m):
            passed = (x[r] < threshold) | ((x[r] != x[r]) & missing_true)
            word[r] &= full if passed else mask
    elif mode == 2:
        for r in range(m):
            passed = (x[r] >= threshold) | ((x[r] != x[r]) & missing_true)
            word[r] &= full if passed else mask
    else:
        for r in range(m):
            passed = (x[r] > threshold) | ((x[r] != x[r]) & missing_true)
            word[r] &= full if passed else mask
