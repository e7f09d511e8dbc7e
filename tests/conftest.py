"""Shared fixtures: the shared real data (skip or fail), and a tiny random causal LM with its own tokenizer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data; skips when absent, fails when LPSELECT_REQUIRE_SHARED=1 (CI)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if os.environ.get("LPSELECT_REQUIRE_SHARED") == "1":
            pytest.fail(f"LPSELECT_REQUIRE_SHARED=1 but {path} is missing")
        pytest.skip(f"shared data not found at {path} (a user's clone): these tests read ../shared/data")
    return path


def require_package_dir(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        if os.environ.get("LPSELECT_REQUIRE_SHARED") == "1":
            pytest.fail(f"package providing {module} is not installed")
        pytest.skip(f"package providing {module} is not installed")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama and a small byte-level BPE tokenizer, saved as an HF folder."""
    from lpselect.testing import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def alpaca_rows(n: int) -> list[dict[str, str]]:
    """``n`` small Alpaca samples of varied length, some with an input."""
    return [{
        "instruction": f"Add {i} and {i + 3}." if i % 3 else "Describe the fox " + "quickly " * i,
        "input": "" if i % 2 else "The quick brown fox " * (1 + i % 4),
        "output": f"The answer is {2 * i + 3}." + " The lazy dog." * (i % 5),
    } for i in range(n)]


@pytest.fixture
def alpaca_file(tmp_path: Path) -> Path:
    """Twelve small Alpaca samples (:func:`alpaca_rows`)."""
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(alpaca_rows(12), indent=2))
    return path


def write_json(path: Path, rows: list[dict]) -> Path:
    """``rows`` as a JSON array (indent 2)."""
    path.write_text(json.dumps(rows, indent=2))
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """``rows`` as JSON lines."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
