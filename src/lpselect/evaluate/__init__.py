"""Pairwise evaluation (SPEC §10): judge two models' answers in both orders and tally wins, ties, losses.

``prompt`` (what the judge is asked, how its reply is read), ``answers`` (answers files, paired by question),
``client`` / ``local`` (the judge backends), ``cache`` (replies on disk), ``judge`` (asking, in both orders),
``reviews`` (review files), ``tally`` (the pure count), ``report`` / ``plot`` (table, JSON, chart).
"""
