"""The pieces the fine-tuning recipe shares: the one rank-0 question and the one split of a pass over ranks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lpselect.runs.ranks import is_main_process


@pytest.mark.parametrize(("rank", "main"), [(None, True), ("0", True), ("1", False), ("3", False)])
def test_rank_zero_is_asked_of_the_launcher_environment(monkeypatch, rank, main):
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    assert is_main_process() is main


def test_the_rank_question_does_not_import_torch():
    code = "import sys, lpselect.runs.ranks, lpselect.cli.options; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_pass_is_split_longest_first_round_robin_and_disjoint():
    from lpselect.data.tokenize import TokenizedData
    from lpselect.engine.distributed import Workers
    from lpselect.engine.passes import rank_shards

    lengths = [5, 1, 3, 2, 4]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    data = TokenizedData(tokens=np.zeros(offsets[-1], dtype=np.int32), scored=np.ones(offsets[-1], dtype=bool),
                         offsets=offsets, truncated=np.zeros(5, dtype=np.int32),
                         prompt_shortened=np.zeros(5, dtype=bool))
    # by hand: rows by length, longest first: 0 (5), 4 (4), 2 (3), 3 (2), 1 (1); dealt to 2 ranks in turn
    shards = rank_shards(data, Workers(rank=0, world=2))
    assert [s.tolist() for s in shards] == [[0, 2, 1], [4, 3]]
    assert rank_shards(data, Workers())[0].tolist() == [0, 1, 2, 3, 4]  # one process: every row, in order
    assert rank_shards(data, Workers(rank=1, world=2), rows=np.array([1, 3]))[1].tolist() == [1]
