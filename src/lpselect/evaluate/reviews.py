"""Review files: the project's own JSONL (written by ``judge``) and the Cherry-LLM study's JSON (read only).

Own format, one JSON object per question::

    {"testset": "vicuna", "id": 1, "question": "...", "model_a": "...", "model_b": "...",
     "judge": "gpt-4o-mini", "prompt": "lpselect-judge-v1",
     "order_ab": {"reply": "...", "scores": [7.0, 9.0], "attempts": 1},
     "order_ba": {"reply": "...", "scores": [9.0, 6.0], "attempts": 1},
     "status": "parsed", "verdict": "B"}

``order_ab`` showed A's answer first, so its scores are [A, B]; ``order_ba`` showed B first: [B, A]. A reply
that could not be read has ``scores: null`` and makes the question ``unparsed``; a request that failed after
every retry also carries ``"error"`` and makes it ``failed`` (both are left out of the tally and counted).
``verdict`` ("A", "B", "tie" or null) is for people reading the file; the tally recomputes it from the scores.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from lpselect.config import ReviewFormat
from lpselect.core.tally import A_WINS, B_WINS, Scores, verdict
from lpselect.errors import InputError
from lpselect.runs.io import atomic_path, jsonl_objects

FORMATS: tuple[str, ...] = get_args(ReviewFormat)
_VERDICT_NAMES = {A_WINS: "A", B_WINS: "B", 0: "tie"}


@dataclass(frozen=True)
class OrderResult:
    """One order's judging: the judge's (last) reply and the scores read from it, in the order shown."""

    reply: str
    scores: Scores | None
    attempts: int | None = None
    error: str | None = None  # the request failed after every retry: nothing was judged


@dataclass(frozen=True)
class Review:
    testset: str
    id: int | str
    question: str
    ab: OrderResult
    ba: OrderResult
    model_a: str | None = None
    model_b: str | None = None
    judge: str | None = None
    prompt: str | None = None

    @property
    def status(self) -> str:
        if self.ab.error is not None or self.ba.error is not None:
            return "failed"
        return "parsed" if self.ab.scores is not None and self.ba.scores is not None else "unparsed"

    @property
    def verdict(self) -> str | None:
        if self.ab.scores is None or self.ba.scores is None:
            return None
        return _VERDICT_NAMES[verdict(self.ab.scores, self.ba.scores)]


def tally_rows(reviews: Iterable[Review]) -> Iterable[tuple[str, Scores | None, Scores | None]]:
    """The rows :func:`lpselect.core.tally.tally` counts."""
    return ((r.testset, r.ab.scores, r.ba.scores) for r in reviews)


# ----------------------------------------------------------------------------------------------- own format


def review_to_json(r: Review) -> dict[str, Any]:
    def order(o: OrderResult) -> dict[str, Any]:
        out = {"reply": o.reply, "scores": list(o.scores) if o.scores else None, "attempts": o.attempts}
        return out if o.error is None else {**out, "error": o.error}

    return {"testset": r.testset, "id": r.id, "question": r.question, "model_a": r.model_a,
            "model_b": r.model_b, "judge": r.judge, "prompt": r.prompt, "order_ab": order(r.ab),
            "order_ba": order(r.ba),
            "status": r.status, "verdict": r.verdict}


def write_reviews(path: str | Path, reviews: Iterable[Review]) -> Path:
    """Write the own JSONL format atomically (a reader never sees half a file)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in reviews:
            f.write(json.dumps(review_to_json(r), ensure_ascii=False) + "\n")
    return path


def _scores(value: Any, path: Path, row: int, field: str) -> Scores | None:
    """Two finite numbers, or None for an unparsed order; a JSON string like "[8.0, 6.0]" is accepted."""
    if value is None:
        return None
    bad = f"scores {value!r} are not a list of two numbers"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InputError(path, bad, row=row, field=field) from None
    ok = (isinstance(value, list) and len(value) == 2
          and all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in value))
    if not ok:
        raise InputError(path, bad, row=row, field=field)
    return float(value[0]), float(value[1])


def read_own(path: str | Path) -> list[Review]:
    path = Path(path)
    out: list[Review] = []
    for i, obj in jsonl_objects(path):
        if not isinstance(obj.get("testset"), str) or not obj["testset"]:
            raise InputError(path, "missing test-set name", row=i, field="testset")
        orders = []
        for name in ("order_ab", "order_ba"):
            o = obj.get(name)
            if not isinstance(o, dict):
                raise InputError(path, "missing (expected an object with reply and scores)", row=i,
                                 field=name)
            error = o.get("error")
            orders.append(OrderResult(str(o.get("reply") or ""), _scores(o.get("scores"), path, i, name),
                                      o.get("attempts"), None if error is None else str(error)))
        out.append(Review(obj["testset"], obj.get("id", i), str(obj.get("question") or ""), orders[0],
                          orders[1], obj.get("model_a"), obj.get("model_b"), obj.get("judge"),
                          obj.get("prompt")))
    return out


# -------------------------------------------------------------------------------------------- cherry format

_CHERRY_NON_QUESTION = {"Answer1", "Answer2", "review", "review_reverse", "scores", "scores_reverse"}


def cherry_testset_name(path: str | Path) -> str:
    """``vicuna_reviews_gpt3.5.json`` -> ``vicuna``."""
    name = Path(path).name
    if "_reviews" not in name:
        raise InputError(path, "cannot tell the test set: expected a name like 'vicuna_reviews_gpt3.5.json'")
    return name.split("_reviews", 1)[0]


def _cherry_scores(value: Any, path: Path, row: int, field: str) -> Scores | None:
    s = _scores(value, path, row, field)
    return None if s is not None and min(s) < 0 else s  # the study wrote [-1, -1] for an unreadable reply


def read_cherry(path: str | Path) -> list[Review]:
    """A ``*_reviews_*.json`` of the Cherry-LLM study: ``scores`` is [A, B], ``scores_reverse`` [B, A]."""
    path = Path(path)
    testset = cherry_testset_name(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(path, f"not valid JSON ({e.msg})") from None
    rows = doc.get("data") if isinstance(doc, dict) else doc
    if not isinstance(rows, list):
        raise InputError(path, "expected a list of reviews under 'data'", field="data")
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise InputError(path, "expected an object", row=i)
        for name in ("scores", "scores_reverse"):
            if name not in r:
                raise InputError(path, "missing", row=i, field=name)
        question = next((v for k, v in r.items() if k not in _CHERRY_NON_QUESTION), "")
        if isinstance(question, list):  # a conversation: its first turn is the request
            question = question[0] if question else ""
        out.append(Review(
            testset, i, str(question),
            OrderResult(str(r.get("review", "")), _cherry_scores(r["scores"], path, i, "scores")),
            OrderResult(str(r.get("review_reverse", "")), _cherry_scores(r["scores_reverse"], path, i,
                                                                          "scores_reverse")),
        ))
    return out


def read_reviews(paths: Iterable[str | Path], fmt: str = "own") -> list[Review]:
    """Read review files of one format, in the order given."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    reader = read_own if fmt == "own" else read_cherry
    out: list[Review] = []
    for p in paths:
        if not Path(p).is_file():
            raise InputError(p, "not found: `lpselect judge --out FILE` writes a review file")
        out.extend(reader(p))
    return out


def model_labels(reviews: Iterable[Review], label_a: str | None = None, label_b: str | None = None
                 ) -> tuple[str, str]:
    """The models' names given, else the ones every review agrees on, else A / B."""
    reviews = list(reviews)

    def agreed(values: set) -> str | None:
        return next(iter(values)) if len(values) == 1 and None not in values else None

    return (label_a or agreed({r.model_a for r in reviews}) or "A",
            label_b or agreed({r.model_b for r in reviews}) or "B")
