"""One module per pipeline step, each a Python API function with its CLI command over it:
plan -> score (seeds) -> cluster -> select (card) -> train, and ``pipeline`` for score -> cluster -> select
in one run folder. Generation and judging are in :mod:`lpselect.evaluate`, reading the results in
:mod:`lpselect.analysis`."""
