"""Where a set of weights came from: a small JSON record beside every checkpoint the bundle writes.

A checkpoint ``models/model.pt`` stays what MONAI users load with ``torch.load`` + ``load_state_dict`` (a plain
state dict); its record is ``models/model.pt.json``: the data it was trained on, how many epochs, how the model was
selected, when, and by which bundle version, plus the SHA-256 of the weights file it describes, so that a record
left beside other weights (a file replaced by hand) is recognised as not theirs. The bundle's inference and
evaluation log the record of the weights they load and warn by name when those were trained on the synthetic demo
set.

Weights that did not come from this bundle's training (the original release's checkpoints, weights copied from
elsewhere) get a record with :func:`write_provenance`::

    python -c "from monai_egeunet.provenance import write_provenance; write_provenance('bundle/models/model.pt',
        dataset='ISIC 2018 train + PH2 train', epochs=50, selection='best val_mean_dice')"
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "PROVENANCE_SUFFIX",
    "describe_weights",
    "file_sha256",
    "provenance_path",
    "read_provenance",
    "write_provenance",
]

logger = logging.getLogger(__name__)

#: the record of ``NAME`` is ``NAME`` + this suffix (``model.pt`` -> ``model.pt.json``)
PROVENANCE_SUFFIX = ".json"


def provenance_path(weights: str | os.PathLike) -> Path:
    """The provenance record's path for the weights file ``weights`` (its name with ``.json`` appended)."""
    weights = Path(weights)
    return weights.with_name(weights.name + PROVENANCE_SUFFIX)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import monai
    import torch

    from monai_egeunet.version import __version__

    return {"monai_egeunet_version": __version__, "monai_version": monai.__version__, "torch_version": torch.__version__}


def write_provenance(weights: str | os.PathLike, record: Mapping[str, Any] | None = None, **fields: Any) -> Path:
    """Writes the provenance record of an existing weights file (atomically, beside it).

    The record holds ``record`` and ``fields`` (e.g. ``dataset``, ``epochs``, ``selection``, ``bundle_version``),
    plus what is known without being told: the weights file's name and SHA-256, the date (``saved``, ISO 8601,
    UTC, unless given) and the package, MONAI and PyTorch versions. Values that JSON cannot hold are written as
    strings.

    Args:
        weights: the weights file (it must exist: the record names its hash).
        record: fields of the record.
        fields: more fields (override ``record``'s).

    Returns:
        The record's path.

    Example::

        >>> write_provenance("models/model.pt", dataset="PH2 train (140 images)", epochs=300)  # doctest: +SKIP
        PosixPath('models/model.pt.json')
    """
    from monai_egeunet.utils import atomic_write

    weights = Path(weights)
    content = {
        "weights": weights.name,
        "sha256": file_sha256(weights),
        "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **_versions(),
        **dict(record or {}),
        **fields,
    }
    path = provenance_path(weights)
    with atomic_write(path, "w") as f:
        json.dump(content, f, indent=1, default=str)
    return path


def read_provenance(weights: str | os.PathLike) -> dict[str, Any] | None:
    """The provenance record of ``weights``, or None when there is none or it describes other weights.

    A record whose SHA-256 is not that of ``weights`` (the weights were replaced, the record was not) is reported
    in the log and ignored; an unreadable record is reported and ignored.

    Args:
        weights: the weights file.

    Returns:
        The record, or None.
    """
    path = provenance_path(weights)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        logger.warning(f"cannot read the provenance record {path} ({e}): the weights' origin is unknown")
        return None
    if not isinstance(record, dict):
        logger.warning(f"{path} is not a provenance record (a JSON object): the weights' origin is unknown")
        return None
    if Path(weights).is_file() and record.get("sha256") not in (None, file_sha256(weights)):
        logger.warning(f"the provenance record {path} describes other weights than {weights} (SHA-256 differs): "
                       f"the weights' origin is unknown")
        return None
    return record


def describe_weights(weights: str | os.PathLike, record: Mapping[str, Any] | None = None) -> str:
    """One line saying what the weights in ``weights`` are, for a log: what they were trained on, for how long,
    how they were selected, when and by which bundle version (from their provenance record).

    Args:
        weights: the weights file.
        record: its record (default: :func:`read_provenance`).

    Returns:
        The description.
    """
    record = read_provenance(weights) if record is None else record
    if not record:
        return (f"weights {weights}: no provenance record ({provenance_path(weights).name}); not written by this "
                f"bundle's training, or copied without it")
    data = record.get("dataset") or "an unnamed dataset"
    if record.get("training_images") is not None:
        data += f" ({record['training_images']} training images)"
    epochs = record.get("epochs")
    if epochs is not None and record.get("max_epochs") is not None:
        epochs = f"{epochs} of {record['max_epochs']}"
    parts = [f"trained on {data}"]
    if epochs is not None:
        parts.append(f"{epochs} epochs")
    for key in ("selection", "saved"):
        if record.get(key):
            parts.append(f"{key} {record[key]}" if key == "saved" else str(record[key]))
    if record.get("bundle_version"):
        parts.append(f"bundle {record['bundle_version']}")
    return f"weights {weights}: " + ", ".join(parts)
