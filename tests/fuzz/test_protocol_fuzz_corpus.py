"""Replay of saved crashing inputs from ``tests/fuzz/corpus/`` (raw client bytes, fed to a
fresh connection right after ``connection_made``), whole and split byte by byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fuzz_harness import CORPUS, replay

# pamqp warns when the fuzzer builds deprecated methods (e.g. access.request)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# --------------------------------------------------------------------------------------
# corpus replay
# --------------------------------------------------------------------------------------
def _corpus_params() -> list[Any]:
    files = sorted(CORPUS.glob("*.bin")) if CORPUS.is_dir() else []
    return [pytest.param(path, id=path.name) for path in files]


@pytest.mark.parametrize("path", _corpus_params())
@pytest.mark.parametrize("split", ["whole", "bytewise"])
def test_corpus_replay(path: Path, split: str) -> None:
    data = path.read_bytes()
    chunks = [data] if split == "whole" else [data[i:i + 1] for i in range(len(data))]
    replay(chunks)
