"""A ``--model`` that is not there (a typo, no network, offline mode) ends in one line naming the model and
where it was looked for, exit 2, and no traceback, from every command that loads a model (issue 12)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lpselect.cli import app
from lpselect.engine.models import load_embedder, load_tokenizer, model_not_found
from lpselect.errors import LPSelectError

HUB_TYPO = "facebook/opt-350mm"  # one letter off facebook/opt-350m


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"instruction": f"Add {i} and 2.", "input": "", "output": f"{i + 2}"}
                                for i in range(4)]))
    return path


def _testsets(tmp_path: Path) -> Path:
    folder = tmp_path / "testsets"
    folder.mkdir()
    (folder / "vicuna_test_set.jsonl").write_text(json.dumps({"question_id": 1, "text": "Say hi."}) + "\n")
    return folder


def _args(command: str, model: str, tmp_path: Path) -> list[str]:
    if command == "score":
        return ["score", "--data", str(_data(tmp_path)), "--out", str(tmp_path / "run"), "--model", model,
                "--epochs", "0", "--device", "cpu", "--quiet"]
    if command == "train":
        return ["train", "--data", str(_data(tmp_path)), "--out", str(tmp_path / "run"), "--model", model,
                "--epochs", "1", "--max-steps", "1", "--device", "cpu", "--quiet"]
    return ["generate", "--model", model, "--testsets", "vicuna", "--testset-dir", str(_testsets(tmp_path)),
            "--out", str(tmp_path / "run" / "answers.jsonl"), "--device", "cpu", "--quiet"]


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE=1 in this process: huggingface_hub read the variable at import, so patch its constant too."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def _says_offline(line: str, name: str = HUB_TYPO) -> None:
    assert f"model '{name}' not found" in line
    assert f"no local folder {Path.cwd() / name}" in line  # where it looked on disk
    assert "offline mode is on (HF_HUB_OFFLINE)" in line and "Hugging Face hub was not asked" in line


def test_a_hub_id_in_offline_mode_is_one_line(tmp_path: Path) -> None:
    """A fresh process, as users run it: HF_HUB_OFFLINE=1 (CI, this machine) and a misspelt hub id."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("TRANSFORMERS_OFFLINE", None)
    done = subprocess.run([sys.executable, "-m", "lpselect.cli", *_args("score", HUB_TYPO, tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    _says_offline(_one_line(done.stderr))
    assert not (tmp_path / "run" / "manifest.json").exists()  # the typo did not claim the run folder


@pytest.mark.parametrize("command", ["score", "train", "generate"])
def test_every_loading_command_says_the_same(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _offline(monkeypatch)
    r = CliRunner().invoke(app, _args(command, HUB_TYPO, tmp_path))
    assert r.exit_code == 2, r.output
    _says_offline(_one_line(r.stderr))
    assert not (tmp_path / "run" / "manifest.json").exists()


@pytest.mark.parametrize("command", ["score", "train", "generate"])
@pytest.mark.parametrize(("kind", "said"), [("missing", "does not exist"),
                                            ("empty", "is not a model folder (no config.json)"),
                                            ("file", "is a file, not a model folder")])
def test_a_local_path_that_is_no_model_is_one_line(command: str, kind: str, said: str, tmp_path: Path) -> None:
    """A path is never sent to the hub: the message is about the path alone (and needs no network)."""
    target = tmp_path / "models" / "my-opt"
    if kind == "empty":
        target.mkdir(parents=True)
    elif kind == "file":
        target.parent.mkdir(parents=True)
        target.write_text("not a model")
    r = CliRunner().invoke(app, _args(command, str(target), tmp_path))
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    line = _one_line(r.stderr)
    assert f"model '{target}' not found: the local " in line and f"{target.resolve()} {said}" in line
    assert "hub" not in line
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_a_relative_path_names_the_folder_it_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LPSelectError) as e:
        load_tokenizer("./no/such/folder")
    assert str(e.value) == f"model './no/such/folder' not found: the local path {tmp_path}/no/such/folder " \
                           "does not exist"


def _hub_error(message: str, cause: BaseException | None = None) -> OSError:
    err = OSError(message)
    err.__cause__ = cause
    return err


@pytest.mark.parametrize(("err", "offline", "said"), [
    (_hub_error("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in "
                "the cached files."), False, "the Hugging Face hub could not be reached (no network?)"),
    (_hub_error("We couldn't connect to 'https://huggingface.co' to load the files.",
                OSError("Cannot find the requested files in the disk cache and outgoing traffic has been "
                        "disabled.")), True, "offline mode is on (HF_HUB_OFFLINE)"),
    (_hub_error(f"{HUB_TYPO} is not a local folder and is not a valid model identifier listed on "
                "'https://huggingface.co/models'"), False, "the Hugging Face hub has no model of that name"),
    (_hub_error("You are trying to access a gated repo."), False, "gated model"),
])
def test_the_hub_side_of_the_diagnosis(err: OSError, offline: bool, said: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub's answer is read from the exception chain: offline, unreachable, no such model, gated."""
    from huggingface_hub import constants

    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    message = str(model_not_found(HUB_TYPO, err))
    assert message.startswith(f"model '{HUB_TYPO}' not found: no local folder ")
    assert said in message
    assert "\n" not in message


def test_a_model_folder_that_does_not_load_says_so(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A folder with config.json is found; if it still fails (weights missing) the message says that instead."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    message = str(model_not_found(str(broken), OSError(f"Error no file named model.safetensors found in {broken}")))
    assert message.startswith(f"model '{broken}': the local folder {broken} did not load: Error no file named")


def test_the_embedder_loader_is_one_line_too(tmp_path: Path) -> None:
    with pytest.raises(LPSelectError) as e:
        load_embedder(str(tmp_path / "no-embedder"))
    assert str(e.value) == (f"model '{tmp_path / 'no-embedder'}' not found: the local path "
                            f"{tmp_path / 'no-embedder'} does not exist")


def test_the_embedder_hub_id_in_offline_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    _offline(monkeypatch)
    with pytest.raises(LPSelectError) as e:
        load_embedder("sentence-transformers/all-MiniLM-L6-vv")
    _says_offline(str(e.value), "sentence-transformers/all-MiniLM-L6-vv")


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def _hub_down(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Online mode, the hub at a closed local port (never an outside address), an empty hub cache."""
    from huggingface_hub import constants

    from lpselect.engine import models

    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    models._hub_unreachable.cache_clear()
    monkeypatch.setattr(models, "_hub_unreachable", functools.cache(models._hub_unreachable.__wrapped__))


def test_an_unreachable_hub_is_refused_at_once_not_after_retries(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub retries a refused connection with back-off (51 s for a tokenizer): one probe instead."""
    import time

    _hub_down(monkeypatch, tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(LPSelectError) as e:
        load_tokenizer("facebook/opt-350m")
    assert time.perf_counter() - t0 < 5
    assert str(e.value).startswith("model 'facebook/opt-350m' not found: no local folder ")
    assert "the Hugging Face hub could not be reached" in str(e.value)


def test_an_unreachable_hub_uses_the_cached_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lpselect.engine import models

    _hub_down(monkeypatch, tmp_path)
    monkeypatch.setattr(models, "_hub_cached", lambda name: name == "org/cached")
    assert models.hub_options("org/cached") == {"local_files_only": True}
    assert models.hub_options(str(tmp_path)) == {}  # a local folder never asks the hub
