"""``lpselect eval`` as a function: both models answer the test sets, the judge grades every pair in both
orders, and the docs/method.md §10 tally is written (JSON and PNG). Each step resumes (answered questions and cached
replies are kept), so calling it again after a crash only does what is missing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lpselect.config import GenerateConfig
from lpselect.core.tally import TallyReport, tally
from lpselect.evaluate.generate import generate_answers, load_testsets
from lpselect.evaluate.judge import ChatBackend, JudgeResult, judge_files
from lpselect.evaluate.plot import plot_tally
from lpselect.evaluate.report import report_json
from lpselect.evaluate.reviews import model_labels, tally_rows
from lpselect.runs.io import write_json
from lpselect.runs.layout import ANSWERS, REVIEWS, WINRATE_JSON, WINRATE_PNG


@dataclass
class EvalResult:
    answers_a: Path
    answers_b: Path
    judged: JudgeResult
    tally: TallyReport
    label_a: str
    label_b: str
    winrate_json: Path
    winrate_png: Path


def evaluate_models(model_a: str | Path, model_b: str | Path, judge: ChatBackend, out_dir: str | Path,
                    generation: GenerateConfig | None = None, *, concurrency: int = 4, parse_retries: int = 2,
                    progress: bool = True) -> EvalResult:
    """Answer (with ``generation``'s test sets and settings), judge and tally into ``out_dir``
    (answers_a/b.jsonl, reviews.jsonl, winrate.json/png)."""
    g = generation or GenerateConfig()
    out = Path(out_dir)
    questions = load_testsets(g.testsets, g.testset_dir, limit=g.limit)
    answers = [generate_answers(model, out / ANSWERS.format(side=side), g, questions=questions,
                                progress=progress).out_path
               for side, model in (("a", model_a), ("b", model_b))]
    judged = judge_files(answers[0], answers[1], out / REVIEWS, judge, concurrency=concurrency,
                         parse_retries=parse_retries, progress=progress)
    report = tally(tally_rows(judged.reviews))
    label_a, label_b = model_labels(judged.reviews)
    winrate_json, winrate_png = out / WINRATE_JSON, out / WINRATE_PNG
    write_json(winrate_json, report_json(report, label_a, label_b))
    plot_tally(report, winrate_png, label_a, label_b)
    return EvalResult(answers[0], answers[1], judged, report, label_a, label_b, winrate_json, winrate_png)
