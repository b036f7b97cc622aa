"""Mini-batch k-means in PyTorch: the ``--gpu`` path of ``cluster/train_cluster.py``.

Same method as 4.1's ``cluster/kmeans.py`` ``KMeansGPU`` (spec §9.1): Euclidean distance,
k-means++ initialisation on a random subsample, then at most ``max_iter`` mini-batch steps in
which each centre moves towards the mean of the batch rows assigned to it with the per-centre
rate ``0.9 / count + 0.1`` (``count`` starts at 1 and grows with every assigned row); training
stops when the summed squared move of the batch means is ``<= tol``.

Differences from 4.1 (none changes what a trained file means):
- runs on CPU as well (4.1 required CUDA and ``pynvml``); the batch size on CUDA comes from
  ``torch.cuda.mem_get_info`` with 4.1's rule, on CPU it is a fixed 4096 rows;
- a centre that gets no row in a batch stays where it is (4.1 pulled it towards the origin);
- seeded (``seed``), so a run can be repeated;
- distances are computed in row chunks so memory stays bounded for 10000 centres.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from tqdm import tqdm

log = logging.getLogger(__name__)

CPU_BATCH_ROWS = 4096
# Rows per distance block: block × n_clusters × 4 bytes (2048 × 10000 → 82 MB).
_DIST_BLOCK_ROWS = 2048


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def auto_batch_rows(n_clusters: int, device: torch.device) -> int:
    """Mini-batch size: 4.1's ``33e6 / n_clusters × free GiB`` on CUDA, 4096 rows on CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return max(1, int(33e6 / n_clusters * free / 1024**3))
    return CPU_BATCH_ROWS


def nearest_centres(x: torch.Tensor, centres: torch.Tensor, centres_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Index of the nearest centre (Euclidean) for each row: ``x [N, C]``, ``centres [K, C]`` → int64 ``[N]``.

    argmin ‖x − c‖² = argmin (‖c‖² − 2·x·c); ties go to the lowest index, as in sklearn.
    """
    if centres_sq is None:
        centres_sq = (centres * centres).sum(dim=1)
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for s in range(0, x.shape[0], _DIST_BLOCK_ROWS):
        blk = x[s : s + _DIST_BLOCK_ROWS]
        d = torch.addmm(centres_sq.unsqueeze(0), blk, centres.t(), beta=1.0, alpha=-2.0)
        out[s : s + blk.shape[0]] = d.argmin(dim=1)
    return out


def _min_sq_dist_to(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared distance of each row of ``x [N, C]`` to the single point ``c [C]``."""
    diff = x - c
    return (diff * diff).sum(dim=1)


def kmeans_plus_plus(x: torch.Tensor, n_clusters: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (D² sampling, one candidate per step) of ``n_clusters`` rows of ``x``."""
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator, device=generator.device).item())
    centres = torch.empty(n_clusters, x.shape[1], dtype=x.dtype, device=x.device)
    centres[0] = x[first]
    d2 = _min_sq_dist_to(x, centres[0])
    for k in range(1, n_clusters):
        total = d2.sum()
        if not torch.isfinite(total) or total <= 0:
            # Fewer distinct rows than centres: the remaining picks are uniform.
            pick = torch.randint(n, (1,), generator=generator, device=generator.device)
        else:
            u = torch.rand(1, generator=generator, device=generator.device, dtype=d2.dtype) * total
            pick = torch.searchsorted(torch.cumsum(d2, 0), u).clamp_(max=n - 1)
        centres[k] = x[pick.to(x.device)].squeeze(0)
        torch.minimum(d2, _min_sq_dist_to(x, centres[k]), out=d2)
    return centres


class TorchKMeans:
    """Mini-batch k-means (4.1's ``KMeansGPU`` method) on any torch device.

    ``fit(X)`` with ``X`` float32 ``[N, C]`` (numpy or CPU tensor; it stays on the CPU and only
    batches move to ``device``) sets ``centroids`` (``[n_clusters, C]`` on ``device``) and
    ``cluster_centers_`` (numpy float32), ``n_iter_``.
    """

    def __init__(
        self,
        n_clusters: int,
        *,
        max_iter: int = 500,
        tol: float = 1e-2,
        batch_size: int | None = None,
        device: torch.device | str | None = None,
        seed: int | None = 0,
        progress: bool = True,
    ) -> None:
        if n_clusters < 1:
            raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
        self.n_clusters = int(n_clusters)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.device = torch.device(device) if device is not None else default_device()
        self.batch_size = batch_size
        self.seed = seed
        self.progress = progress
        self.centroids: torch.Tensor | None = None
        self.n_iter_ = 0

    @property
    def cluster_centers_(self) -> np.ndarray:
        if self.centroids is None:
            raise RuntimeError("TorchKMeans is not fitted yet")
        return self.centroids.detach().to("cpu", torch.float32).numpy().copy()

    def _generator(self) -> torch.Generator:
        g = torch.Generator(device=self.device)
        if self.seed is None:
            g.seed()
        else:
            g.manual_seed(int(self.seed))
        return g

    def fit(self, X: np.ndarray | torch.Tensor) -> "TorchKMeans":
        data = torch.as_tensor(X, dtype=torch.float32)
        if data.dim() != 2:
            raise ValueError(f"expected [N, C] features, got shape {tuple(data.shape)}")
        n = data.shape[0]
        k = self.n_clusters
        if n < k:
            raise ValueError(f"{n} rows cannot make {k} clusters")
        gen = self._generator()
        batch = int(self.batch_size or auto_batch_rows(k, self.device))
        batch = max(1, min(batch, n))
        # The seeding subsample needs at least k rows; 4.1 sized it like a batch.
        n_init = min(n, max(batch, 2 * k))
        idx = torch.randperm(n, generator=gen, device=gen.device)[:n_init].to("cpu")
        sample = data[idx].to(self.device)
        centres = kmeans_plus_plus(sample, k, gen)
        del sample
        counts = torch.ones(k, dtype=torch.float32, device=self.device)
        whole = data.to(self.device) if batch >= n else None
        bar = tqdm(range(self.max_iter), desc="k-means (torch)", unit="step", leave=False, disable=not self.progress)
        error = math.inf
        it = 0
        for it in bar:
            if whole is not None:
                x = whole
            else:
                rows = torch.randint(n, (batch,), generator=gen, device=gen.device).to("cpu")
                x = data[rows].to(self.device, non_blocking=True)
            labels = nearest_centres(x, centres)
            sums = torch.zeros_like(centres).index_add_(0, labels, x)
            hits = torch.bincount(labels, minlength=k).to(torch.float32)
            used = hits > 0
            means = sums[used] / hits[used].unsqueeze(1)
            error = float(((means - centres[used]) ** 2).sum())
            rate = (0.9 / counts[used] + 0.1).unsqueeze(1)
            counts[used] += hits[used]
            centres[used] = centres[used] * (1 - rate) + means * rate
            bar.set_postfix(error=f"{error:.4g}")
            if error <= self.tol:
                break
        bar.close()
        self.n_iter_ = it + 1
        self.centroids = centres
        log.debug("torch k-means: %d steps, last error %.4g", self.n_iter_, error)
        return self

    def predict(self, X: np.ndarray | torch.Tensor) -> np.ndarray:
        if self.centroids is None:
            raise RuntimeError("TorchKMeans is not fitted yet")
        x = torch.as_tensor(X, dtype=torch.float32).to(self.device)
        return nearest_centres(x, self.centroids).cpu().numpy()

    def fit_predict(self, X: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.fit(X).predict(X)


# 4.1's name for the same thing (``from kmeans import KMeansGPU`` in cluster/train_cluster.py).
KMeansGPU = TorchKMeans
