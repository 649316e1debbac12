"""Groups of rows linked in pairs: connected components of an undirected graph (scipy)."""
from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def connected_groups(n: int, left: list[int] | np.ndarray, right: list[int] | np.ndarray) -> np.ndarray:
    """A group number per row 0..n-1, where each (left[i], right[i]) pair shares a group. Groups are numbered in
    order of their first row, so the result is deterministic."""
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    return connected_components(graph, directed=False)[1]
