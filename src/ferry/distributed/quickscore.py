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
    tree_count, _, targets = tables.leaves.shape
    nodes = (
        tables.features, tables.thresholds, tables.modes, tables.missing_true, tables.masks,
        tables.trees,
    )  # fmt: skip
    scratch = (
        np.empty((tree_count, BLOCK), dtype=tables.masks.dtype),  # each row's leaves left
        np.empty((rows.shape[1], BLOCK), dtype=np.float32),  # the block, column by column
        np.empty((targets, BLOCK), dtype=np.float32),  # its sums
    )
    constants = (words.all, words.one, words.magic, words.shift, words.positions)
    return _scores(rows, nodes, tables.leaves, constants, scratch)


@njit(nogil=True, cache=True, boundscheck=False)
def _scores(rows, nodes, leaves, constants, scratch):
    bits, columns, sums = scratch
    out = np.zeros((rows.shape[0], leaves.shape[2]), dtype=np.float32)
    for start in range(0, rows.shape[0], bits.shape[1]):
        m = min(bits.shape[1], rows.shape[0] - start)
        _transpose(rows, start, m, columns)
        bits[:, :m] = constants[0]
        _exit_leaves(nodes, columns, bits, m, constants[0])
        _sum_leaves(bits, leaves, constants, sums, m)
        out[start : start + m, :] = sums[:, :m].T
    return out


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _transpose(rows, start, m, columns):
    for f in range(rows.shape[1]):  # reads strided, writes each column contiguously
        for r in range(m):
            columns[f, r] = rows[start + r, f]


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _exit_leaves(nodes, columns, bits, m, full):
    features, thresholds, modes, missing_true, masks, trees = nodes
    for j in range(features.shape[0]):
        _test(
            columns[features[j]], thresholds[j], modes[j], missing_true[j], masks[j],
            bits[trees[j]], m, full,
        )  # fmt: skip


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _sum_leaves(bits, leaves, constants, sums, m):
    full, one, magic, shift, positions = constants
    for c in range(leaves.shape[2]):
        total = sums[c]
        total[:m] = 0
        for t in range(leaves.shape[0]):
            word, weights = bits[t], leaves[t, :, c]
            for r in range(m):
                low = word[r] & (~word[r] + one)  # typed constants: no float promotion
                total[r] += weights[positions[((low * magic) & full) >> shift]]


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
