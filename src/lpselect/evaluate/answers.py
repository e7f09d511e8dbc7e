"""Answers files and pairing: the two models' answers to the same question, matched by (testset, id).

An answers file is JSONL, one object per question, as ``generate`` writes it::

    {"testset": "vicuna", "id": 1, "question": "...", "answer": "...", "model": "..."}

``id`` is the question's id within its test set (int or string); ``model`` names the answering model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lpselect.errors import InputError
from lpselect.runs.io import jsonl_objects


@dataclass(frozen=True)
class Answer:
    testset: str
    id: int | str
    question: str
    answer: str
    model: str | None


@dataclass(frozen=True)
class AnswerPair:
    """One question with model A's and model B's answers."""

    testset: str
    id: int | str
    question: str
    answer_a: str
    answer_b: str


def read_answers(path: str | Path) -> list[Answer]:
    """Read and validate an answers file; errors name the file, the line (0-based) and the field."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "not found: `lpselect generate --out FILE` writes an answers file")
    rows: list[Answer] = []
    seen: set[tuple[str, str]] = set()
    for i, obj in jsonl_objects(path):
        for name in ("testset", "question", "answer"):
            if not isinstance(obj.get(name), str):
                raise InputError(path, "missing or not a string", row=i, field=name)
        if not obj["testset"]:
            raise InputError(path, "empty test-set name", row=i, field="testset")
        qid = obj.get("id")
        if isinstance(qid, bool) or not isinstance(qid, int | str):
            raise InputError(path, "missing or not an integer/string", row=i, field="id")
        model = obj.get("model")
        if model is not None and not isinstance(model, str):
            raise InputError(path, "not a string", row=i, field="model")
        key = (obj["testset"], str(qid))
        if key in seen:
            raise InputError(path, f"question {key[1]} of test set '{key[0]}' appears twice", row=i,
                             field="id")
        seen.add(key)
        rows.append(Answer(obj["testset"], qid, obj["question"], obj["answer"], model))
    if not rows:
        raise InputError(path, "no answers in the file")
    return rows


def model_name(answers: list[Answer], path: str | Path) -> str:
    """The file's model name (the first ``model`` given), else the file's stem."""
    return next((a.model for a in answers if a.model), Path(path).stem)


def pair_answers(path_a: str | Path, path_b: str | Path) -> tuple[list[AnswerPair], str, str]:
    """Pair A's and B's answers by (testset, id) in A's order; both files must cover the same questions."""
    a_rows, b_rows = read_answers(path_a), read_answers(path_b)
    b_by_key = {(b.testset, str(b.id)): b for b in b_rows}
    a_keys = {(a.testset, str(a.id)) for a in a_rows}
    missing_in_b = [k for k in ((a.testset, str(a.id)) for a in a_rows) if k not in b_by_key]
    if missing_in_b:
        raise InputError(path_b, f"{len(missing_in_b)} question(s) of {path_a} have no answer here, first: "
                                 f"test set '{missing_in_b[0][0]}', id {missing_in_b[0][1]}")
    extra_in_b = [k for k in b_by_key if k not in a_keys]
    if extra_in_b:
        raise InputError(path_a, f"{len(extra_in_b)} question(s) of {path_b} have no answer here, first: "
                                 f"test set '{extra_in_b[0][0]}', id {extra_in_b[0][1]}")
    pairs = []
    for a in a_rows:
        b = b_by_key[(a.testset, str(a.id))]
        if a.question.strip() != b.question.strip():
            raise InputError(path_b, f"test set '{a.testset}', id {a.id}: the question differs from {path_a}",
                             field="question")
        pairs.append(AnswerPair(a.testset, a.id, a.question, a.answer, b.answer))
    return pairs, model_name(a_rows, path_a), model_name(b_rows, path_b)
