"""docs/method.md §10's tally, pure: per question the signs of both orders add up to a verdict; count and win rate.

Scores come as the judge wrote them: order 1 shows A first (``[A, B]``), order 2 shows B first (``[B, A]``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

Scores = tuple[float, float]

A_WINS, TIE, B_WINS = 1, 0, -1


def sign(x: float) -> int:
    return (x > 0) - (x < 0)


def verdict(scores_ab: Scores, scores_ba: Scores) -> int:
    """+1 when A wins, -1 when B wins, 0 for a tie: sign(A - B) of order 1 plus sign(A - B) of order 2."""
    first = sign(scores_ab[0] - scores_ab[1])
    second = sign(scores_ba[1] - scores_ba[0])  # order 2 is [B, A]
    return sign(first + second)


@dataclass(frozen=True)
class Tally:
    """Counts of one test set (or all). ``unparsed`` questions are outside ``n`` and the win rate."""

    wins: int = 0
    ties: int = 0
    losses: int = 0
    unparsed: int = 0

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def wr(self) -> float | None:
        """(wins - losses) / n + 1: 1.0 is parity, above 1 A is better; None without a judged question."""
        return (self.wins - self.losses) / self.n + 1 if self.n else None

    def plus(self, other: Tally) -> Tally:
        return Tally(self.wins + other.wins, self.ties + other.ties, self.losses + other.losses,
                     self.unparsed + other.unparsed)


@dataclass(frozen=True)
class TallyReport:
    per_testset: dict[str, Tally] = field(default_factory=dict)  # in order of first appearance
    overall: Tally = Tally()


_ONE = {A_WINS: Tally(wins=1), TIE: Tally(ties=1), B_WINS: Tally(losses=1)}


def tally(rows: Iterable[tuple[str, Scores | None, Scores | None]]) -> TallyReport:
    """Count (testset, scores of order 1, scores of order 2) rows; a row missing either order is unparsed."""
    per: dict[str, Tally] = {}
    for testset, ab, ba in rows:
        one = Tally(unparsed=1) if ab is None or ba is None else _ONE[verdict(ab, ba)]
        per[testset] = per.get(testset, Tally()).plus(one)
    overall = Tally()
    for t in per.values():
        overall = overall.plus(t)
    return TallyReport(per, overall)
