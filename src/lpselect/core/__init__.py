"""Pure math, numpy only: the metrics (docs/method.md §6), the selection rules (§8), S2L trajectories, consensus ranks,
the judge tally (§10) and the cost arithmetic of a plan. Nothing here imports torch, pyarrow or transformers."""
