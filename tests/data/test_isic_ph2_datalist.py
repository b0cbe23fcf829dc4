"""The datalist of the shipped weights' training (``scripts/isic_ph2_datalist.py``), on the project's data: no test
id enters it, the validation images are the same whatever ``--ph2_repeat``, and repeated PH2 photos are the only
difference."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.utils import ISIC_DIR, ISIC_SPLIT, PH2_DIR, PH2_SPLIT, REPO_ROOT, require


def _datalist(out: Path, *extra: str) -> dict:
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "isic_ph2_datalist.py"), str(out),
           "--isic_dir", str(require(ISIC_DIR)), "--ph2_dir", str(require(PH2_DIR)), *extra]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.read_text())


def _ids(items: list[dict]) -> Counter:
    return Counter(Path(it["image"]).stem for it in items)


def test_datalist_of_the_shipped_weights(tmp_path):
    plain = _datalist(tmp_path / "plain.json")
    weighted = _datalist(tmp_path / "weighted.json", "--ph2_repeat", "5")
    test_ids = set(json.loads(ISIC_SPLIT.read_text())["test"]) | set(json.loads(require(PH2_SPLIT).read_text())["test"])
    for content in (plain, weighted):
        assert not test_ids & set(_ids(content["training"]) | _ids(content["validation"]))
    assert weighted["validation"] == plain["validation"]
    assert Counter(it["source"] for it in plain["validation"]) == {"isic2018": 201, "ph2": 11}
    counts, plain_counts = _ids(weighted["training"]), _ids(plain["training"])
    assert counts.keys() == plain_counts.keys() and set(plain_counts.values()) == {1}
    assert {counts[i] for i in counts if i.startswith("IMD")} == {5}
    assert {counts[i] for i in counts if i.startswith("ISIC")} == {1}
    assert len(weighted["training"]) == 1777 + 5 * 129


def test_ph2_repeat_must_be_positive(tmp_path):
    with pytest.raises(subprocess.CalledProcessError) as err:
        _datalist(tmp_path / "x.json", "--ph2_repeat", "0")
    assert "--ph2_repeat must be >= 1" in err.value.stderr
