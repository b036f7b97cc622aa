"""Clustering and feature retrieval (spec §9): 4.1's knobs against timbre leakage.

Inference API (names 4.1 code and our ``inference`` package use):

- :func:`get_cluster_model` (``kmeans_10000.pt`` → ``{speaker name: KMeansModel}``),
  :func:`get_cluster_result`, :func:`get_cluster_center_result`, :func:`get_center`;
- :func:`load_index` (``feature_and_index.pkl`` through an allow-list unpickler, or this
  project's ``.json`` manifest + ``faiss.write_index`` files) → :class:`FeatureIndex`;
- :func:`load_cluster_model` (either, chosen by the ``-fr`` flag or the extension) and
  :func:`mix_units` (``c ← r·target + (1 − r)·c`` with ``r = cluster_infer_ratio``).

Training lives in :mod:`cluster.training` (scripts ``cluster/train_cluster.py`` and
``train_index.py``); file formats in :mod:`cluster.storage`. faiss and scikit-learn are imported
only when a function needs them.
"""

from cluster.mixing import (
    RETRIEVAL_K,
    FeatureIndex,
    KMeansClusters,
    KMeansModel,
    check_ratio,
    get_center,
    get_cluster_center_result,
    get_cluster_model,
    get_cluster_result,
    load_cluster_model,
    load_index,
    mix_units,
)
from cluster.storage import (
    export_index_for_onnx,
    read_index_file,
    read_kmeans,
    save_kmeans,
    write_index_file,
)

__all__ = [
    "RETRIEVAL_K",
    "FeatureIndex",
    "KMeansClusters",
    "KMeansModel",
    "check_ratio",
    "export_index_for_onnx",
    "get_center",
    "get_cluster_center_result",
    "get_cluster_model",
    "get_cluster_result",
    "load_cluster_model",
    "load_index",
    "mix_units",
    "read_index_file",
    "read_kmeans",
    "save_kmeans",
    "write_index_file",
]
