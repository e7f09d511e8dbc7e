"""The judge against a real local chat-completions server: both orders, parsing, retries, timeouts, the cache,
bounded concurrency, the API key (only from the environment, never on disk); the local backend; the CLI."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import typer
from conftest import shared_data
from typer.testing import CliRunner

from lpselect.cli import app as lpselect_app
from lpselect.core.tally import Tally, tally
from lpselect.errors import InputError
from lpselect.evaluate.answers import AnswerPair, pair_answers
from lpselect.evaluate.cache import ReplyCache
from lpselect.evaluate.client import (
    JudgeRequestError,
    NoReply,
    OpenAIChatClient,
    RetriesExhausted,
    backoff_delay,
    parse_retry_after,
)
from lpselect.evaluate.judge import judge_files, judge_pairs
from lpselect.evaluate.prompt import PROMPT_VERSION, SYSTEM_PROMPT, build_messages, parse_scores
from lpselect.evaluate.reviews import read_own, tally_rows

# ------------------------------------------------------------------------------------------ a judge server

Reply = tuple[int, dict[str, str], Any, float]  # status, headers, body (dict -> JSON, str -> raw), delay


def completion(text: str) -> dict[str, Any]:
    return {"id": "cmpl-1", "object": "chat.completion", "model": "judge-x",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}]}


def grade_by_quality(body: dict[str, Any], n: int) -> Reply:
    """Grade each shown answer by the ``quality=N`` it carries, in the order the answers appear."""
    user = body["messages"][-1]["content"]
    q = re.findall(r"quality=(\d+)", user)
    return 200, {}, completion(f"{q[0]} {q[1]}\nAnswer 1 is quality {q[0]}, answer 2 is quality {q[1]}."), 0.0


class FakeJudge:
    """Records every request (path, Authorization, body) and the most requests it ever had in flight."""

    def __init__(self) -> None:
        self.respond: Callable[[dict[str, Any], int], Reply] = grade_by_quality
        self.requests: list[dict[str, Any]] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()

    def user_messages(self) -> list[str]:
        return [r["body"]["messages"][-1]["content"] for r in self.requests]


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        fake: FakeJudge = self.server.fake  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with fake.lock:
            fake.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            n = len(fake.requests)
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        left = False
        try:
            status, headers, payload, delay = fake.respond(body, n)
            time.sleep(delay)
            data = (json.dumps(payload) if isinstance(payload, dict) else payload).encode()
            with fake.lock:  # answered: the client may send its next request the moment it reads this reply
                fake.in_flight -= 1
                left = True
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left
        finally:
            if not left:
                with fake.lock:
                    fake.in_flight -= 1

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeJudge, str]]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.block_on_close = False
    httpd.fake = FakeJudge()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.fake, f"http://127.0.0.1:{httpd.server_address[1]}/v1"  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


def client(url: str, **kw: Any) -> OpenAIChatClient:
    opts: dict[str, Any] = {"api_key": "test-key", "timeout": 5.0, "max_retries": 3, "backoff_base": 0.001,
                            "backoff_max": 0.005}
    opts.update(kw)
    return OpenAIChatClient("judge-x", base_url=url, **opts)


def write_answers(path: Path, model: str, rows: list[tuple[str, int | str, str, str]]) -> Path:
    lines = [{"testset": t, "id": i, "question": q, "answer": a, "model": model} for t, i, q, a in rows]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.fixture
def answers(tmp_path: Path) -> tuple[Path, Path]:
    """Three questions: A better, B better, equal (each answer names its quality, the server's grade)."""
    a = write_answers(tmp_path / "a.jsonl", "model-a", [
        ("vicuna", 1, "Q one?", "A-answer quality=8"),
        ("vicuna", 2, "Q two?", "A-answer quality=4"),
        ("koala", "k3", "Q three?", "A-answer quality=6"),
    ])
    b = write_answers(tmp_path / "b.jsonl", "model-b", [   # another order: pairing is by (testset, id)
        ("koala", "k3", "Q three?", "B-answer quality=6"),
        ("vicuna", 2, "Q two?", "B-answer quality=9"),
        ("vicuna", 1, "Q one?", "B-answer quality=5"),
    ])
    return a, b


# ------------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(("reply", "expected"), [
    ("7 9\nBecause...", (7.0, 9.0)),
    ("\n\n  8, 6  \nexplanation", (8.0, 6.0)),            # blank lines before the first line
    ("**7** **9**", (7.0, 9.0)),                           # markdown
    ("Answer 1: 7/10, Answer 2: 9/10", (7.0, 9.0)),        # labels and "/10"
    ("Scores: 7.5 and 10", (7.5, 10.0)),
    ("Assistant 1: 3 Assistant 2: 10 out of 10", (3.0, 10.0)),
    ("10 1", (10.0, 1.0)),
])
def test_parse_first_line(reply, expected):
    assert parse_scores(reply) == expected


@pytest.mark.parametrize("reply", [
    "", None, "I think both are fine.", "7", "7 9 10", "0 9", "11 3", "7 -1",
    "Let me think first.\n7 9",                            # the grades must be on the first line
])
def test_unparseable_first_line_is_not_guessed(reply):
    assert parse_scores(reply) is None


def test_parser_agrees_with_every_real_judge_reply():
    folder = shared_data("judge-reviews", "cherry_alpaca_5pct-vs-alpaca")
    checked = 0
    for path in sorted(folder.glob("*_reviews_gpt3.5.json")):
        for row in json.loads(path.read_text())["data"]:
            for reply, scores in ((row["review"], row["scores"]),
                                  (row["review_reverse"], row["scores_reverse"])):
                assert parse_scores(reply) == tuple(json.loads(scores)), (path.name, reply[:80])
                checked += 1
    assert checked == 2 * 1030


def test_prompt_puts_the_first_answer_first():
    msgs = build_messages("What is 2+2?", "FIRST", "SECOND")
    assert msgs[0] == {"role": "system", "content": SYSTEM_PROMPT}
    user = msgs[1]["content"]
    assert "What is 2+2?" in user and user.index("FIRST") < user.index("SECOND")
    assert "{" not in user  # every placeholder filled


# ------------------------------------------------------------------------------------- both orders, files


def test_both_orders_are_asked_and_scores_kept_as_shown(server, answers, tmp_path: Path):
    fake, url = server
    out = tmp_path / "reviews.jsonl"
    result = judge_files(*answers, out, client(url), concurrency=2)
    assert len(fake.requests) == 6
    assert {r["path"] for r in fake.requests} == {"/v1/chat/completions"}
    assert all(r["body"]["model"] == "judge-x" and r["body"]["temperature"] == 0.0 for r in fake.requests)
    shown = Counter(tuple(re.findall(r"(A|B)-answer", m)) for m in fake.user_messages())
    assert shown == {("A", "B"): 3, ("B", "A"): 3}  # every question in both orders

    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["testset"], x["id"]) for x in lines] == [("vicuna", 1), ("vicuna", 2), ("koala", "k3")]
    assert [x["order_ab"]["scores"] for x in lines] == [[8, 5], [4, 9], [6, 6]]   # [A, B]
    assert [x["order_ba"]["scores"] for x in lines] == [[5, 8], [9, 4], [6, 6]]   # [B, A]
    assert [x["verdict"] for x in lines] == ["A", "B", "tie"]
    assert {x["status"] for x in lines} == {"parsed"}
    assert {(x["model_a"], x["model_b"], x["judge"], x["prompt"]) for x in lines} == {
        ("model-a", "model-b", "judge-x", PROMPT_VERSION)}
    report = tally(tally_rows(read_own(out)))
    assert report.per_testset == {"vicuna": Tally(wins=1, losses=1), "koala": Tally(ties=1)}
    assert result.n_unparsed == 0 and result.stats.requests_sent == 6


def test_messy_replies_parse_and_unreadable_ones_are_retried_then_counted(server, tmp_path: Path):
    fake, url = server
    seen: Counter[str] = Counter()

    def respond(body: dict[str, Any], n: int) -> Reply:
        user = body["messages"][-1]["content"]
        seen[user] += 1
        if "messy" in user:
            return 200, {}, completion("**Answer 1: 7/10 - Answer 2: 9/10**\nreasons"), 0.0
        if "never" in user:
            return 200, {}, completion("Both answers have merit, hard to say."), 0.0
        # "late": unreadable the first time this exact request is seen, readable after
        return 200, {}, completion("Let me think." if seen[user] == 1 else "6 4\nok"), 0.0

    fake.respond = respond
    a = write_answers(tmp_path / "a.jsonl", "a", [("t", i, f"{i} question?", f"a {i}") for i in
                                                  ("messy", "never", "late")])
    b = write_answers(tmp_path / "b.jsonl", "b", [("t", i, f"{i} question?", f"b {i}") for i in
                                                  ("messy", "never", "late")])
    result = judge_files(a, b, tmp_path / "r.jsonl", client(url), parse_retries=2, concurrency=2)
    messy, never, late = result.reviews
    assert messy.ab.scores == (7.0, 9.0) and messy.ab.attempts == 1
    assert never.status == "unparsed" and never.ab.scores is None and never.ba.scores is None
    assert never.ab.reply == "Both answers have merit, hard to say." and never.ab.attempts == 3
    assert late.ab.scores == (6.0, 4.0) and late.ba.scores == (6.0, 4.0) and late.ab.attempts == 2
    # 1 request per messy order, 1 + 2 retries per "never" order, 2 per "late" order
    kinds = ("messy", "never", "late")
    per_question = Counter(next(w for w in kinds if w in m) for m in fake.user_messages())
    assert per_question == {"messy": 2, "never": 6, "late": 4}
    # messy and late: the judge favours whichever answer is shown second -> the two orders cancel: ties
    assert tally(tally_rows(result.reviews)).overall == Tally(ties=2, unparsed=1)
    line = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[1])
    assert line["status"] == "unparsed" and line["order_ab"]["scores"] is None and line["verdict"] is None


# ------------------------------------------------------------------------------------- retries, timeouts


def test_retry_on_500_then_429_respecting_retry_after(server):
    fake, url = server
    script = {1: (500, {}, "boom"), 2: (429, {"Retry-After": "2"}, "slow down")}
    fake.respond = lambda body, n: (*script[n], 0.0) if n in script else (200, {}, completion("8 3"), 0.0)
    sleeps: list[float] = []
    c = client(url, sleep=sleeps.append, backoff_base=0.4, backoff_max=10.0)
    assert c.complete(build_messages("q", "x", "y")) == "8 3"
    assert len(fake.requests) == 3
    assert len(sleeps) == 2
    assert 0.2 <= sleeps[0] <= 0.4     # first backoff: uniform in [base/2, base]
    assert sleeps[1] == 2.0            # the server's Retry-After, not the backoff


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    assert backoff_delay(0, 1.0, 60.0, rand=lambda: 0.0) == 0.5
    assert backoff_delay(3, 1.0, 60.0, rand=lambda: 1.0) == 8.0
    assert backoff_delay(10, 1.0, 60.0, rand=lambda: 1.0) == 60.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 5) == pytest.approx(5.0)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_gives_up_after_max_retries(server):
    fake, url = server
    fake.respond = lambda body, n: (503, {}, "unavailable", 0.0)
    sleeps: list[float] = []
    with pytest.raises(JudgeRequestError, match=r"gave up after 3 attempts.*HTTP 503"):
        client(url, max_retries=2, sleep=sleeps.append).complete(build_messages("q", "x", "y"))
    assert len(fake.requests) == 3 and len(sleeps) == 2


def test_client_errors_fail_at_once_and_never_show_the_key(server):
    fake, url = server
    fake.respond = lambda body, n: (401, {}, '{"error": "bad key ' + "sk-secret-123" + '"}', 0.0)
    with pytest.raises(JudgeRequestError, match="HTTP 401") as err:
        client(url, api_key="sk-secret-123").complete(build_messages("q", "x", "y"))
    assert "sk-secret-123" not in str(err.value)
    assert len(fake.requests) == 1


def test_a_reply_later_than_the_timeout_is_not_asked_again(server):
    """The server has the request and is still generating it: a second copy would only add to its load."""
    fake, url = server
    fake.respond = lambda body, n: (200, {}, completion("5 6"), 1.0)
    t0 = time.perf_counter()
    with pytest.raises(RetriesExhausted, match=r"no reply within 0.3 s; not sent again") as err:
        client(url, timeout=0.3, max_retries=6).complete(build_messages("q", "x", "y"))
    assert isinstance(err.value, NoReply)
    assert time.perf_counter() - t0 < 1.0  # did not wait for the slow reply
    time.sleep(1.0)  # the server's handler finishes: any retry would have been counted by now
    assert len(fake.requests) == 1


def test_503_twice_then_an_answer_is_retried_with_backoff(server):
    fake, url = server
    fake.respond = lambda body, n: (503, {}, "busy", 0.0) if n <= 2 else (200, {}, completion("7 2"), 0.0)
    sleeps: list[float] = []
    assert client(url, sleep=sleeps.append, backoff_base=0.4, backoff_max=10.0).complete(
        build_messages("q", "x", "y")) == "7 2"
    assert len(fake.requests) == 3
    assert 0.2 <= sleeps[0] <= 0.4 and 0.4 <= sleeps[1] <= 0.8  # uniform in [d/2, d], d = 0.4 * 2**retry


def test_connection_refused_is_retried_then_reported():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    sleeps: list[float] = []
    with pytest.raises(JudgeRequestError, match="gave up after 3 attempts"):
        client(f"http://127.0.0.1:{port}/v1", max_retries=2, sleep=sleeps.append).complete(
            build_messages("q", "x", "y"))
    assert len(sleeps) == 2


# ------------------------------------------------------------------------------------ cache, concurrency


def test_second_run_sends_no_request(server, answers, tmp_path: Path):
    fake, url = server
    late: Counter[str] = Counter()

    def respond(body: dict[str, Any], n: int) -> Reply:
        user = body["messages"][-1]["content"]
        late[user] += 1
        if "Q two?" in user and late[user] == 1:
            return 200, {}, completion("no grades here"), 0.0  # one parse retry, cached too
        return grade_by_quality(body, n)

    fake.respond = respond
    out = tmp_path / "reviews.jsonl"
    first = judge_files(*answers, out, client(url))
    sent = len(fake.requests)
    assert sent == 6 + 2 and first.stats.requests_sent == sent
    text = out.read_text()
    out.unlink()
    second = judge_files(*answers, out, client(url))
    assert len(fake.requests) == sent                   # nothing sent again
    assert second.stats.requests_sent == 0 and second.stats.cache_hits == sent
    assert out.read_text() == text
    assert len(list((tmp_path / "reviews.cache").rglob("*.json"))) == sent
    # another judge model is another cache key
    judge_files(*answers, out, OpenAIChatClient("judge-y", base_url=url, api_key="k"))
    assert len(fake.requests) > sent


def test_concurrency_is_bounded(server, tmp_path: Path):
    fake, url = server
    fake.respond = lambda body, n: (*grade_by_quality(body, n)[:3], 0.15)
    rows = [("t", i, f"q{i}?", "quality=7") for i in range(6)]
    a = write_answers(tmp_path / "a.jsonl", "a", rows)
    b = write_answers(tmp_path / "b.jsonl", "b", rows)
    pairs, _, _ = pair_answers(a, b)
    judge_pairs(pairs, client(url), concurrency=3)
    assert len(fake.requests) == 12
    assert 2 <= fake.max_in_flight <= 3
    fake.max_in_flight = 0
    judge_pairs(pairs[:3], client(url), concurrency=1, cache=ReplyCache(tmp_path / "c1"))
    assert fake.max_in_flight == 1


def test_answers_pairing_errors(tmp_path: Path):
    a = write_answers(tmp_path / "a.jsonl", "a", [("t", 1, "q?", "x"), ("t", 2, "q2?", "x")])
    b = write_answers(tmp_path / "b.jsonl", "b", [("t", 1, "q?", "y")])
    with pytest.raises(InputError, match=r"b\.jsonl.*1 question\(s\).*id 2"):
        pair_answers(a, b)
    c = write_answers(tmp_path / "c.jsonl", "c", [("t", 1, "q?", "y"), ("t", 2, "another question", "y")])
    with pytest.raises(InputError, match="question differs"):
        pair_answers(a, c)
    d = write_answers(tmp_path / "d.jsonl", "d", [("t", 1, "q?", "y"), ("t", 1, "q?", "y")])
    with pytest.raises(InputError, match=r"row 1, field 'id'.*twice"):
        pair_answers(a, d)


# -------------------------------------------------------------------------------------------- the CLI


def eval_app() -> typer.Typer:
    return lpselect_app


def test_api_key_only_from_the_environment_and_never_on_disk(server, answers, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    fake, url = server
    key = f"sk-lpselect-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("LPSELECT_TEST_JUDGE_KEY", key)
    out = tmp_path / "run" / "reviews.jsonl"
    res = CliRunner().invoke(eval_app(), [
        "judge", "--a", str(answers[0]), "--b", str(answers[1]), "--judge-model", "judge-x",
        "--base-url", url, "--api-key-env", "LPSELECT_TEST_JUDGE_KEY", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "6 requests sent" in res.output
    assert [r["auth"] for r in fake.requests] == [f"Bearer {key}"] * 6
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 3 + 6  # answers, reviews and one cache file per request were all searched
    assert all(key.encode() not in p.read_bytes() for p in files)
    assert key not in res.output


def test_cli_judge_without_a_key_sends_no_authorization(server, answers, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    fake, url = server
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    res = CliRunner().invoke(eval_app(), [
        "judge", "--a", str(answers[0]), "--b", str(answers[1]), "--judge-model", "judge-x",
        "--base-url", url, "--api-key-env", "NO_SUCH_KEY_VAR", "--out", str(tmp_path / "r.jsonl"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert {r["auth"] for r in fake.requests} == {None}


def test_cli_winrate_cherry_writes_json_and_png(tmp_path: Path):
    files = sorted(shared_data("judge-reviews", "cherry_alpaca_5pct-vs-alpaca").glob("*_reviews_gpt3.5.json"))
    js, png = tmp_path / "out" / "wr.json", tmp_path / "out" / "wr.png"
    res = CliRunner().invoke(eval_app(), ["winrate", *map(str, files), "--format", "cherry",
                                          "--json", str(js), "--plot", str(png),
                                          "--label-a", "cherry", "--label-b", "alpaca"])
    assert res.exit_code == 0, res.output
    doc = json.loads(js.read_text())
    got = {k: (v["wins"], v["ties"], v["losses"], v["n"]) for k, v in doc["per_testset"].items()}
    assert got == {"vicuna": (16, 58, 6, 80), "koala": (32, 110, 38, 180), "wizardlm": (50, 135, 33, 218),
                   "sinstruct": (40, 172, 40, 252), "lima": (60, 210, 30, 300)}
    assert list(doc["per_testset"]) == ["vicuna", "koala", "wizardlm", "sinstruct", "lima"]
    assert doc["overall"]["wr"] == pytest.approx((198 - 147) / 1030 + 1)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(png) as im:
        assert im.size[0] > 600 and im.size[1] > 300
    assert "SInstruct" in res.output and "198" in res.output


def test_cli_winrate_reports_a_bad_file_in_one_line(tmp_path: Path):
    bad = tmp_path / "r.jsonl"
    bad.write_text('{"testset": "t"}\n')
    res = CliRunner().invoke(eval_app(), ["winrate", str(bad)])
    assert res.exit_code == 2
    assert "row 0, field 'order_ab'" in res.output and "Traceback" not in res.output


# --------------------------------------------------------------------------------------- local backend


def test_local_backend_greedy_with_the_chat_template(tiny_model_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lpselect.evaluate.local import LocalChat

    chat = LocalChat(tiny_model_dir, max_new_tokens=6, device="cpu")
    messages = build_messages("Add 2 and 3.", "5", "The answer is 5.")
    reply = chat.complete(messages)

    # independently: the chat template's ids, then 6 argmax steps by hand
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    text = "".join(f"<|{m['role']}|>{m['content']}<eos>" for m in messages) + "<|assistant|>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(6):
            nxt = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            new.append(nxt)
    assert reply == tok.decode(new, skip_special_tokens=True)

    pairs = [AnswerPair("t", 0, "Add 2 and 3.", "5", "The answer is 5.")]
    reviews, stats = judge_pairs(pairs, chat, parse_retries=2, concurrency=2)
    assert stats.requests_sent == 2  # greedy: an unreadable reply is not asked again
    assert reviews[0].ab.reply == reply
    assert reviews[0].ab.scores == parse_scores(reviews[0].ab.reply)
    assert reviews[0].judge == str(tiny_model_dir.resolve())


# ------------------------------------------------------------------------------------------------- load


def test_load_slow_server_failing_30_percent(server, tmp_path: Path):
    """A slow judge that fails 30 % of requests (500, 503, 429, no reply in time): every question ends judged or
    counted as failed, in-flight requests stay bounded, no order is asked again after a reply was received or
    after a reply that came too late, and a rerun asks only the failed orders."""
    import random

    fake, url = server
    timeout, concurrency, max_retries = 0.4, 4, 3
    attempts: Counter[str] = Counter()
    outcome: dict[str, list[str]] = {}  # user message -> what each attempt got, in order

    def respond(body: dict[str, Any], n: int) -> Reply:
        user = body["messages"][-1]["content"]
        with fake.lock:
            attempts[user] += 1
            k = attempts[user]
        rng = random.Random(f"{user}|{k}")  # the same fate for the same attempt, whatever the thread order
        delay = rng.uniform(0.02, 0.12)
        roll = rng.random()
        if "always-down" in user or roll < 0.3:
            kind = rng.choice(["500", "503", "429", "timeout"])
            outcome.setdefault(user, []).append("late" if kind == "timeout" else "fail")
            if kind == "timeout":
                return 200, {}, completion("9 1\nlate"), timeout * 2.5  # the client has left by then
            return int(kind), {}, {"error": {"message": "overloaded"}}, delay
        outcome.setdefault(user, []).append("ok")
        return (*grade_by_quality(body, n)[:3], delay)

    fake.respond = respond
    rows = [("vicuna", i, f"Question {i}?", f"A says quality={1 + i % 10}") for i in range(30)]
    rows.append(("koala", "down", "always-down?", "A says quality=5"))
    a = write_answers(tmp_path / "a.jsonl", "a", rows)
    b = write_answers(tmp_path / "b.jsonl", "b", [(t, i, q, "B says quality=5") for t, i, q, _ in rows])
    out = tmp_path / "reviews.jsonl"
    chat = client(url, timeout=timeout, max_retries=max_retries)
    post, lock, open_now, most_open = chat._post, threading.Lock(), [0], [0]

    def counted_post(body: bytes) -> str:  # the client's open connections (the
        with lock:                                                      # server still holds timed-out ones)
            open_now[0] += 1
            most_open[0] = max(most_open[0], open_now[0])
        try:
            return post(body)
        finally:
            with lock:
                open_now[0] -= 1

    chat._post = counted_post  # type: ignore[method-assign]
    result = judge_files(a, b, out, chat, concurrency=concurrency)

    assert 2 <= most_open[0] <= concurrency
    assert len(result.reviews) == len(rows) == len(out.read_text().splitlines())
    for got in outcome.values():
        assert got.count("ok") <= 1, "a received reply is never asked for again"
        if "ok" in got:
            assert got[-1] == "ok", "no request after the reply"
        elif got[-1] == "late":
            assert "late" not in got[:-1], "a request the server still works on is not sent again"
        else:
            assert len(got) == max_retries + 1 and "late" not in got, "a failed order used every retry, no more"
    n_failed_orders = sum("ok" not in got for got in outcome.values())
    assert n_failed_orders >= 2  # the always-down question, in both orders
    tries = [t for got in outcome.values() for t in got]
    assert (len(tries) - tries.count("ok")) / len(tries) > 0.2, "the server did fail about 30 % of requests"
    by_id = {r.id: r for r in result.reviews}
    assert by_id["down"].status == "failed" and by_id["down"].ab.error and by_id["down"].ba.error
    for r in result.reviews:
        assert r.status in ("parsed", "failed")
        if r.status == "parsed":  # the grades are the answers' own qualities: A = 1 + i % 10, B = 5
            assert r.ab.scores == (1 + int(r.id) % 10, 5) and r.ba.scores == (5, 1 + int(r.id) % 10)
    assert result.n_failed == sum(r.status == "failed" for r in result.reviews) >= 1
    assert result.n_failed + len([r for r in result.reviews if r.status == "parsed"]) == len(rows)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert {x["status"] for x in lines if x["id"] == "down"} == {"failed"}
    assert tally(tally_rows(read_own(out))).overall.unparsed == result.n_failed, "failed rows are counted"

    # the server recovers: the rerun sends exactly the failed orders, once each, and nothing else
    sent_before = len(fake.requests)
    fake.respond = grade_by_quality
    again = judge_files(a, b, out, chat, concurrency=concurrency)
    assert len(fake.requests) - sent_before == n_failed_orders
    assert again.n_failed == 0 and again.stats.requests_sent == n_failed_orders


# ------------------------------------------------------------------------------------- a server too slow


def _serial_server(fake: FakeJudge, seconds: float) -> None:
    """One worker that takes ``seconds`` a reply and finishes every request it got, whether or not its client
    still waits (as ``transformers serve`` on a CPU does)."""
    worker = threading.Lock()

    def respond(body: dict[str, Any], n: int) -> Reply:
        with worker:
            time.sleep(seconds)
        return (*grade_by_quality(body, n)[:3], 0.0)

    fake.respond = respond


def test_a_server_slower_than_the_timeout_gets_each_order_once(server, answers, tmp_path: Path, caplog):
    """3 questions, 2 orders, 4 in flight, 0.3 s a reply on one worker, a 0.5 s timeout: the queue outgrows the
    timeout at once. Exactly 6 requests (the old client re-sent every timed-out one and sent up to 7 each);
    the orders without a reply count as failed, and a rerun with a timeout that fits asks exactly those."""
    fake, url = server
    _serial_server(fake, 0.3)
    out = tmp_path / "reviews.jsonl"
    with caplog.at_level("WARNING", logger="lpselect.evaluate.client"):
        first = judge_files(*answers, out, client(url, timeout=0.5, max_retries=6), concurrency=4)
    time.sleep(6 * 0.3 + 0.5)  # the server works off its queue: a re-sent request would show up now
    assert len(fake.requests) == 6 and first.stats.requests_sent == 6
    failed = [o for r in first.reviews for o in (r.ab, r.ba) if o.scores is None]
    assert failed and all("not sent again" in o.error for o in failed)
    assert len([r for r in caplog.records if "--timeout" in r.getMessage()]) == 1  # said once what to change

    again = judge_files(*answers, out, client(url, timeout=5.0), concurrency=4)
    assert len(fake.requests) == 6 + len(failed) and again.stats.requests_sent == len(failed)
    assert again.n_failed == 0 and all(r.status == "parsed" for r in again.reviews)


def test_the_default_judge_waits_for_a_slow_server(server, answers, tmp_path: Path):
    """`judge` with its defaults (JudgeConfig: timeout, retries, concurrency 4) against one slow worker: 6
    requests for 3 questions, every order answered. The defaults wait 10 minutes for a reply, far more than
    the old 120 s that a 2-core CPU's queue of 4 outgrew."""
    from lpselect.config import JudgeConfig
    from lpselect.evaluate.judge import build_judge

    fake, url = server
    cfg = JudgeConfig(base_url=url)
    assert cfg.timeout >= 600 and cfg.concurrency == 4
    _serial_server(fake, 0.2)
    chat = build_judge(cfg, "judge-x")
    result = judge_files(*answers, tmp_path / "reviews.jsonl", chat, concurrency=cfg.concurrency,
                         parse_retries=cfg.parse_retries)
    assert len(fake.requests) == 6 and result.stats.requests_sent == 6
    assert result.n_failed == 0 and all(r.status == "parsed" for r in result.reviews)
