"""Which faiss index a collection gets, from its size and a memory budget (`--max-index-memory`).

    exact flat   below `flat_max` vectors (and when n x dim float32 fits the budget): exact, no training
    HNSW         above it, while float32 vectors plus the graph fit the budget: recall ~0.99, fast queries
    IVF-PQ       beyond that: n x (PQ bytes + 8) in memory; the top candidates are re-ranked exactly from
                 the memory-mapped float16 vectors, so recall stays high at a small fraction of the memory

Every index holds L2-normalised vectors searched by inner product (= cosine).  The numbers below (graph
degree, list counts, bytes per code) are the usual starting points (faiss wiki "Guidelines to choose an
index"); `nprobe` / `efSearch` are then raised at build time until recall@10 on a sample reaches the target.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from locktune.errors import LocktuneError

DEFAULT_MAX_INDEX_MEMORY = "4GB"
DEFAULT_FLAT_MAX = 200_000  # brute force over 200k x 256 float32 is ~10 ms a query: no approximation needed
HNSW_M = 32  # graph neighbours per vector (two links of 4 bytes each way on level 0)
IVF_PQ_BYTES = (64, 32, 16, 8)  # bytes per PQ code, best first; each must divide the width into >= 4 dims
RERANK_FACTOR = 10  # IVF-PQ: k x this many candidates re-ranked exactly from the float16 vectors

UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KIB": 2 ** 10, "MIB": 2 ** 20,
         "GIB": 2 ** 30, "TIB": 2 ** 40}


def parse_memory(text: str, what: str = "--max-index-memory") -> int:
    """'4GB', '512MB', '1.5GiB', '1000000' -> bytes; anything else is one LocktuneError naming `what`."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).upper() if match else None
    if not match or unit not in UNITS or float(match.group(1)) <= 0:
        raise LocktuneError(f"{what} {text!r} is not a memory size; write e.g. 4GB, 512MB or 1.5GiB")
    return int(float(match.group(1)) * UNITS[unit])


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@dataclass
class IndexChoice:
    """One faiss index type and its parameters; `recall` is filled in once measured on the built index."""

    kind: str  # "flat" | "hnsw" | "ivfpq"
    params: dict = field(default_factory=dict)
    memory_bytes: int = 0
    budget_bytes: int = 0
    recall: float | None = None  # recall@10 against exact search, on a sample of the indexed vectors

    def factory(self, dim: int) -> str:
        """The faiss index_factory string."""
        if self.kind == "flat":
            return "Flat"
        if self.kind == "hnsw":
            return f"HNSW{self.params['M']}"
        # "np": no polysemous training, which only speeds Hamming filtering and costs minutes per build
        return f"IVF{self.params['nlist']},PQ{self.params['pq_bytes']}np"

    def describe(self) -> str:
        """One line: the type, its parameters, its memory against the budget, and the recall measured."""
        p = self.params
        what = {"flat": "exact flat (inner product)",
                "hnsw": f"HNSW (M {p.get('M')}, efConstruction {p.get('efConstruction')}, efSearch {p.get('efSearch')})",
                "ivfpq": f"IVF-PQ (nlist {p.get('nlist')}, PQ {p.get('pq_bytes')} bytes, nprobe {p.get('nprobe')}, "
                         f"top {p.get('rerank')}x k re-ranked exactly from the float16 vectors)"}[self.kind]
        recall = f"; recall@10 {self.recall:.3f} measured on a sample" if self.recall is not None else ""
        return f"{what}, {human_bytes(self.memory_bytes)} in memory of the {human_bytes(self.budget_bytes)} budget{recall}"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "IndexChoice":
        return cls(**data)


def flat_bytes(n: int, dim: int) -> int:
    return n * dim * 4


def hnsw_bytes(n: int, dim: int, m: int = HNSW_M) -> int:
    # float32 vectors, level-0 links (2M ints), upper levels (~1/M of the vectors, M ints each: ~4 bytes a
    # vector), a level and an offset per vector; +10% for the allocator.
    return int(n * (dim * 4 + 2 * m * 4 + 4 + 12) * 1.1)


def ivfpq_bytes(n: int, dim: int, nlist: int, pq_bytes: int) -> int:
    # codes and 8-byte ids in the inverted lists, the centroids, the PQ codebooks.
    return n * (pq_bytes + 8) + nlist * dim * 4 + 256 * dim * 4


def memory_bytes(kind: str, params: dict, n: int, dim: int) -> int:
    """What an index of `kind` with `params` holding `n` vectors takes in memory."""
    if kind == "flat":
        return flat_bytes(n, dim)
    if kind == "hnsw":
        return hnsw_bytes(n, dim, params["M"])
    return ivfpq_bytes(n, dim, params["nlist"], params["pq_bytes"])


def ivf_lists(n: int) -> int:
    """Inverted lists: a power of two near sqrt(n) (k-means training stays minutes at 100M on a few cores), and at
    least 39 training vectors each."""
    nlist = 2 ** round(math.log2(max(1.0, math.sqrt(n))))
    while nlist > 16 and n < 39 * nlist:
        nlist //= 2
    return max(1, min(nlist, 65536))


def choose_index(n: int, dim: int, budget_bytes: int, flat_max: int = DEFAULT_FLAT_MAX) -> IndexChoice:
    """The index for `n` vectors of width `dim` that fits `budget_bytes` (see the module docstring)."""
    if n <= flat_max and flat_bytes(n, dim) <= budget_bytes:
        return IndexChoice("flat", {}, flat_bytes(n, dim), budget_bytes)
    if hnsw_bytes(n, dim) <= budget_bytes:
        return IndexChoice("hnsw", {"M": HNSW_M, "efConstruction": 80, "efSearch": 64}, hnsw_bytes(n, dim),
                           budget_bytes)
    nlist = ivf_lists(n)
    for pq_bytes in IVF_PQ_BYTES:
        if dim % pq_bytes == 0 and dim // pq_bytes >= 4 and ivfpq_bytes(n, dim, nlist, pq_bytes) <= budget_bytes:
            return IndexChoice("ivfpq", {"nlist": nlist, "pq_bytes": pq_bytes, "nprobe": max(8, nlist // 64),
                                         "rerank": RERANK_FACTOR}, ivfpq_bytes(n, dim, nlist, pq_bytes), budget_bytes)
    smallest = min((b for b in IVF_PQ_BYTES if dim % b == 0 and dim // b >= 4), default=None)
    need = ivfpq_bytes(n, dim, nlist, smallest) if smallest else None
    raise LocktuneError(f"--max-index-memory {human_bytes(budget_bytes)} is too small for {n:,} vectors of width {dim}"
                        + (f": the smallest index (IVF-PQ, {smallest} bytes a vector) needs {human_bytes(need)}; "
                           f"raise it" if need else f": no PQ code size in {IVF_PQ_BYTES} splits {dim} into 4+ dims"))
