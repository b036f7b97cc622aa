"""One shareable model file: ``<name>.svc.safetensors`` (issue 23).

A safetensors file holding the synthesizer's inference weights (float32 or float16), optionally
k-means centres or retrieval features and a shallow-diffusion model, plus one JSON metadata
document: the 4.1 config, speaker map, speech encoder (and its expected SHA-256 when known),
the vocoder it needs, F0 statistics, format and project version, author / licence / description.
Loading reads no pickle.

API:

- :func:`load_model_file` ``(path, *, dtype=torch.float32, load_cluster=True, load_diffusion=True)``
  → :class:`ModelBundle` (``config``, ``spk2id``, ``state_dict``, ``cluster``, ``diffusion_state``,
  ``diffusion_config``, ``build_synthesizer()``, ``build_diffusion()``, ...);
- :func:`is_model_file` ``(path)`` → bool (route ``-m`` to this loader);
- :func:`export_model` (``export_model.py``), :func:`describe` (``--info``), :func:`read_info`.

Layout: :mod:`modelfile.format` (container, checks), :mod:`modelfile.importers` (4.1 / 4.0 /
so-vits-svc-fork checkpoints), :mod:`modelfile.parts` (cluster, index, diffusion),
:mod:`modelfile.bundle` (loading), :mod:`modelfile.export` (writing, ``--info``).
"""

from modelfile.bundle import ModelBundle, is_model_file, load_model_file, read_info
from modelfile.export import describe, export_model, metadata_json
from modelfile.format import FILE_SUFFIX, FORMAT_VERSION, PROJECT_VERSION

__all__ = [
    "FILE_SUFFIX",
    "FORMAT_VERSION",
    "PROJECT_VERSION",
    "ModelBundle",
    "describe",
    "export_model",
    "is_model_file",
    "load_model_file",
    "metadata_json",
    "read_info",
]
