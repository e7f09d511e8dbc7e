"""Pairwise evaluation (docs/method.md §10): judge two models' answers in both orders and tally wins, ties, losses.

``generate`` (the test sets and a model's answers to them), ``prompt`` (what the judge is asked, how its reply
is read), ``answers`` (answers files, paired by question), ``client`` / ``local`` (the judge backends, built
from a ``JudgeConfig`` by ``judge.build_judge``), ``cache`` (replies on disk), ``judge`` (asking, in both
orders), ``reviews`` (review files), ``report`` / ``plot`` (table, JSON, chart) and ``pipeline`` (``lpselect
eval`` as one function). The count itself is pure: :mod:`lpselect.core.tally`.
"""
