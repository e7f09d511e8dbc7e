"""docs/method.md §10's tally: both orders' signs per question, counts per test set, WR; and the published real tally.

Order 1 shows A first (scores [A, B]); order 2 shows B first (scores [B, A]).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared_data

from lpselect.core.tally import Tally, tally, verdict
from lpselect.errors import InputError
from lpselect.evaluate.report import ordered_testsets, report_json
from lpselect.evaluate.reviews import (
    OrderResult,
    Review,
    cherry_testset_name,
    read_cherry,
    read_own,
    read_reviews,
    tally_rows,
    write_reviews,
)

# Every combination of (sign of A - B in order 1, sign of A - B in order 2), as concrete judge scores, and the
# verdict the rule gives: the two signs added, > 0 A, < 0 B, 0 tie (+1 A wins, -1 B wins, 0 tie).
COMBINATIONS = [
    # order 1 [A, B], order 2 [B, A], expected
    ((8, 6), (5, 9), 1),    # +, +  -> A
    ((8, 6), (7, 7), 1),    # +, 0  -> A
    ((8, 6), (9, 4), 0),    # +, -  -> tie (the judge flipped with the order)
    ((7, 7), (6, 8), 1),    # 0, +  -> A
    ((7, 7), (3, 3), 0),    # 0, 0  -> tie
    ((7, 7), (8, 6), -1),   # 0, -  -> B
    ((2, 9), (6, 7), 0),    # -, +  -> tie
    ((2, 9), (5, 5), -1),   # -, 0  -> B
    ((2, 9), (9, 2), -1),   # -, -  -> B
]


@pytest.mark.parametrize(("ab", "ba", "expected"), COMBINATIONS)
def test_verdict_every_combination_of_the_two_orders(ab, ba, expected):
    assert verdict(ab, ba) == expected


def test_verdict_uses_signs_not_margins():
    # A ahead by 9 in order 1, B ahead by 0.5 in order 2: one sign each, a tie (a sum of margins would say A)
    assert verdict((10, 1), (7.5, 7.0)) == 0


def test_tally_counts_per_testset_and_overall():
    rows = [
        ("vicuna", (8, 6), (5, 9)),    # A
        ("vicuna", (8, 6), (9, 4)),    # tie
        ("vicuna", (2, 9), (9, 2)),    # B
        ("vicuna", (7, 7), (6, 8)),    # A
        ("koala", (2, 9), (5, 5)),     # B
        ("koala", (2, 9), (9, 2)),     # B
        ("koala", None, (5, 5)),       # unparsed: outside n
        ("koala", (7, 7), None),       # unparsed
    ]
    report = tally(rows)
    assert list(report.per_testset) == ["vicuna", "koala"]
    assert report.per_testset["vicuna"] == Tally(wins=2, ties=1, losses=1, unparsed=0)
    assert report.per_testset["koala"] == Tally(wins=0, ties=0, losses=2, unparsed=2)
    assert report.overall == Tally(wins=2, ties=1, losses=3, unparsed=2)
    # WR = (W - L) / N + 1, by hand: vicuna (2-1)/4+1, koala (0-2)/2+1, overall (2-3)/6+1
    assert report.per_testset["vicuna"].wr == pytest.approx(1.25)
    assert report.per_testset["koala"].wr == pytest.approx(0.0)
    assert report.overall.n == 6
    assert report.overall.wr == pytest.approx(5 / 6)


def test_win_rate_edges():
    assert Tally(wins=4).wr == 2.0            # A wins everything
    assert Tally(losses=4).wr == 0.0          # B wins everything
    assert Tally(ties=3, wins=1, losses=1).wr == 1.0
    assert Tally(unparsed=5).wr is None       # nothing judged: no rate, not a division by zero
    assert tally([]).overall == Tally()


def test_report_json_shape_and_paper_order():
    report = tally([("lima", (8, 6), (5, 9)), ("mine", (7, 7), (7, 7)), ("vicuna", (2, 9), (9, 2))])
    doc = report_json(report)
    assert list(doc["per_testset"]) == ["vicuna", "lima", "mine"]
    assert doc["per_testset"]["lima"] == {"wins": 1, "ties": 0, "losses": 0, "n": 1, "wr": 2.0, "unparsed": 0}
    assert doc["overall"] == {"wins": 1, "ties": 1, "losses": 1, "n": 3, "wr": 1.0, "unparsed": 0}
    assert ordered_testsets(["x", "lima", "koala", "a"]) == ["koala", "lima", "x", "a"]


# ---------------------------------------------------------------------------------------------- review files


def test_own_format_round_trip(tmp_path: Path):
    reviews = [
        Review("vicuna", 1, "q1", OrderResult("8 6\nwhy", (8.0, 6.0), 1),
               OrderResult("5 9\nwhy", (5.0, 9.0), 1), "ma", "mb", "judge-x", "v1"),
        Review("koala", "k7", "q2", OrderResult("hmm", None, 3), OrderResult("7 7", (7.0, 7.0), 1)),
    ]
    path = write_reviews(tmp_path / "r.jsonl", reviews)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0]["status"] == "parsed" and lines[0]["verdict"] == "A"
    assert lines[0]["order_ab"] == {"reply": "8 6\nwhy", "scores": [8.0, 6.0], "attempts": 1}
    assert lines[1]["status"] == "unparsed" and lines[1]["verdict"] is None
    assert lines[1]["order_ab"]["scores"] is None
    back = read_own(path)
    assert back == reviews


def test_own_format_errors_name_the_line_and_field(tmp_path: Path):
    good = {"testset": "vicuna", "id": 1, "order_ab": {"reply": "", "scores": [8, 6]},
            "order_ba": {"reply": "", "scores": [6, 8]}}
    bad = dict(good, order_ba={"reply": "", "scores": [6, "x"]})
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(InputError, match=r"row 1, field 'order_ba'"):
        read_own(path)
    path.write_text(json.dumps(good) + "\n{oops\n")
    with pytest.raises(InputError, match=r"row 1.*not valid JSON"):
        read_own(path)


def test_cherry_testset_name_comes_from_the_file_name(tmp_path: Path):
    assert cherry_testset_name("x/vicuna_reviews_gpt3.5.json") == "vicuna"
    assert cherry_testset_name("self_instruct_reviews_gpt4.json") == "self_instruct"
    with pytest.raises(InputError, match="cannot tell the test set"):
        cherry_testset_name("reviews.json")
    # a reply the study could not read was stored as [-1, -1]: unparsed, not a tie
    path = tmp_path / "mini_reviews_x.json"
    path.write_text(json.dumps({"Meta_Info": {}, "data": [
        {"text": "q", "Answer1": "a", "Answer2": "b", "review": "r", "review_reverse": "r",
         "scores": "[-1, -1]", "scores_reverse": "[6.0, 8.0]"},
        {"text": "q2", "Answer1": "a", "Answer2": "b", "review": "r", "review_reverse": "r",
         "scores": "[9.0, 6.0]", "scores_reverse": [6.0, 8.0]},
    ]}))
    rows = read_cherry(path)
    assert [r.testset for r in rows] == ["mini", "mini"]
    assert rows[0].question == "q" and rows[0].ab.scores is None and rows[0].ba.scores == (6.0, 8.0)
    assert tally(tally_rows(rows)).per_testset["mini"] == Tally(wins=1, unparsed=1)


# ------------------------------------------------------------------------------------- the published tally

CHERRY = ("judge-reviews", "cherry_alpaca_5pct-vs-alpaca")
# Read off published_tally_gpt3.5.png (cherry_alpaca_5_per wins / Tie / alpaca wins), A = cherry = Answer1.
PUBLISHED = {
    "vicuna": (16, 58, 6),
    "koala": (32, 110, 38),
    "wizardlm": (50, 135, 33),
    "sinstruct": (40, 172, 40),
    "lima": (60, 210, 30),
}


def test_real_reviews_reproduce_the_published_tally():
    folder = shared_data(*CHERRY)
    files = sorted(folder.glob("*_reviews_gpt3.5.json"))
    assert len(files) == 5
    report = tally(tally_rows(read_reviews(files, "cherry")))
    got = {name: (t.wins, t.ties, t.losses) for name, t in report.per_testset.items()}
    assert got == PUBLISHED
    assert all(t.unparsed == 0 for t in report.per_testset.values())
    sizes = {name: sum(counts) for name, counts in PUBLISHED.items()}
    assert sizes == {"vicuna": 80, "koala": 180, "wizardlm": 218, "sinstruct": 252, "lima": 300}
    w, t, lo = (sum(c[i] for c in PUBLISHED.values()) for i in range(3))
    assert (report.overall.wins, report.overall.ties, report.overall.losses) == (w, t, lo) == (198, 685, 147)
    assert report.overall.wr == pytest.approx((198 - 147) / 1030 + 1)
    assert report.per_testset["koala"].wr == pytest.approx((32 - 38) / 180 + 1)
