"""Analysis of finished runs: how two scorers' rankings agree (compare) and a one-file HTML report (report).

Pure math lives in :mod:`~lpselect.analysis.compare` (top half) and :mod:`~lpselect.analysis.summary`;
file reading in :mod:`~lpselect.analysis.runio`; figures in :mod:`~lpselect.analysis.figures`; page markup
in :mod:`~lpselect.analysis.html`; :mod:`~lpselect.analysis.report` puts them together. matplotlib is
imported only by the figure code, so ``lpselect compare`` does not need it.
"""
