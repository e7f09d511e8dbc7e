"""Analysis of finished runs: how two scorers' rankings agree (compare) and a one-file HTML report (report).

Pure math lives in :mod:`~lpselect.analysis.compare` (top half) and :mod:`~lpselect.analysis.summary`;
file reading in :mod:`~lpselect.analysis.runio`; figures in :mod:`~lpselect.analysis.figures`.
matplotlib is imported only by the figure code, so ``lpselect compare`` does not need it.
"""
