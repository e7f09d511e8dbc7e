"""docs/method.md §3–4: the prompt template, the loss mask and both truncation policies, on the tiny BPE tokenizer.

The expected prompts are written out here in full (not taken from lpselect.data.template), and the expected
masks are derived from the tokenizer alone: the first len(tokenize(prompt)) tokens are unscored, the rest
(response + EOS) scored.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lpselect.data.formats import Sample, read_dataset
from lpselect.data.template import render_prompt
from lpselect.data.tokenize import TokenizedData, tokenize_samples

EXPECTED_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:"
)
EXPECTED_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nAdd 2 and 3.\n\n### Response:"
)
HEAD_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\n"
)
HEAD_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\n"
)


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def ids_of(tok, text: str) -> list[int]:
    return list(tok(text).input_ids)


def decoded(tok, data: TokenizedData, i: int) -> tuple[str, str]:
    """(text of the unscored tokens, text of the scored tokens) of row i."""
    t, m = data.row(i)
    return tok.decode(np.asarray(t)[~np.asarray(m)]), tok.decode(np.asarray(t)[np.asarray(m)])


# ------------------------------------------------------------------------------------------ template


def test_templates_are_the_reference_text():
    assert render_prompt("Add the numbers.", "2 and 3") == EXPECTED_WITH_INPUT
    assert render_prompt("Add 2 and 3.", "") == EXPECTED_NO_INPUT


@pytest.mark.parametrize(("instruction", "inp", "expected"), [
    ("Add the numbers.", "2 and 3", EXPECTED_WITH_INPUT),
    ("Add 2 and 3.", "", EXPECTED_NO_INPUT),
])
def test_mask_covers_exactly_response_and_eos(tok, instruction, inp, expected):
    output = "The answer is 5."
    data = tokenize_samples([Sample(0, instruction, inp, output)], tok, max_length=512)
    full = ids_of(tok, expected + output + tok.eos_token)
    n_prompt = len(ids_of(tok, expected))
    t, m = data.row(0)
    assert list(t) == full
    assert list(m) == [False] * n_prompt + [True] * (len(full) - n_prompt)
    prompt_text, scored_text = decoded(tok, data, 0)
    assert prompt_text == expected
    assert scored_text == output + tok.eos_token
    assert int(data.n_scored[0]) == len(full) - n_prompt
    assert int(data.truncated[0]) == 0 and not bool(data.prompt_shortened[0])


def test_many_rows_flat_layout(tok):
    samples = [Sample(i, f"Add {i} and {i + 1}.", "" if i % 2 else "The quick brown fox " * i,
                      "Fox. " * (i + 1)) for i in range(7)]
    data = tokenize_samples(samples, tok, max_length=512)
    assert len(data) == 7
    assert data.offsets[0] == 0 and data.offsets[-1] == len(data.tokens) == len(data.scored)
    for s in samples:
        prompt = render_prompt(s.instruction, s.input)
        t, m = data.row(s.id)
        assert list(t) == ids_of(tok, prompt + s.output + tok.eos_token)
        assert int(np.argmax(m)) == len(ids_of(tok, prompt))  # first scored token right after the prompt
        assert m[int(np.argmax(m)):].all()


# ------------------------------------------------------------------------------------------ truncation

LONG_INSTRUCTION = "Describe the fox " * 40
LONG_INPUT = "The quick brown fox " * 60


def test_right_truncation_of_a_long_prompt_leaves_no_scored_token(tok):
    s = Sample(0, LONG_INSTRUCTION, LONG_INPUT, "It is quick.")
    full = ids_of(tok, render_prompt(s.instruction, s.input) + s.output + tok.eos_token)
    assert len(ids_of(tok, render_prompt(s.instruction, s.input))) > 128
    data = tokenize_samples([s], tok, max_length=128, truncation="right")
    t, m = data.row(0)
    assert list(t) == full[:128]
    assert not np.asarray(m).any()
    assert int(data.n_scored[0]) == 0
    assert int(data.truncated[0]) == len(full) - 128
    assert not bool(data.prompt_shortened[0])


def test_prompt_truncation_cuts_the_end_of_the_input_first(tok):
    instruction, output = "Describe the fox.", "It is quick."
    s = Sample(0, instruction, LONG_INPUT, output)
    data = tokenize_samples([s], tok, max_length=128, truncation="prompt")
    assert int(data.lengths[0]) <= 128
    prompt_text, scored_text = decoded(tok, data, 0)
    assert scored_text == output + tok.eos_token  # the whole response
    head = HEAD_WITH_INPUT + instruction + "\n\n### Input:\n"
    assert prompt_text.startswith(head)  # the full instruction survives
    assert prompt_text.endswith("\n\n### Response:")
    kept_input = prompt_text[len(head) : -len("\n\n### Response:")]
    assert 0 < len(kept_input) < len(LONG_INPUT)
    assert LONG_INPUT.startswith(kept_input)  # cut from its end
    assert int(data.truncated[0]) > 0 and bool(data.prompt_shortened[0])
    assert int(data.n_scored[0]) == len(ids_of(tok, output + tok.eos_token))
    # as much of the prompt as fits: close to the budget
    assert int(data.lengths[0]) >= 128 - 3


def test_prompt_truncation_then_cuts_the_instruction_keeping_the_input_marker(tok):
    output = "It is quick."
    s = Sample(0, LONG_INSTRUCTION, LONG_INPUT, output)
    data = tokenize_samples([s], tok, max_length=128, truncation="prompt")
    assert int(data.lengths[0]) <= 128
    prompt_text, scored_text = decoded(tok, data, 0)
    assert scored_text == output + tok.eos_token
    assert prompt_text.startswith(HEAD_WITH_INPUT)
    # the input is gone entirely, its marker stays; the instruction is a prefix of the original
    tail = "\n\n### Input:\n\n\n### Response:"
    assert prompt_text.endswith(tail)
    kept_instruction = prompt_text[len(HEAD_WITH_INPUT) : -len(tail)]
    assert 0 < len(kept_instruction) < len(LONG_INSTRUCTION)
    assert LONG_INSTRUCTION.startswith(kept_instruction)
    for marker in ("### Instruction:", "### Input:", "### Response:"):
        assert prompt_text.count(marker) == 1
    assert int(data.truncated[0]) > 0 and bool(data.prompt_shortened[0])
    assert int(data.lengths[0]) >= 128 - 3


def test_prompt_truncation_without_input_has_no_input_marker(tok):
    output = "It is quick."
    s = Sample(0, LONG_INSTRUCTION * 2, "", output)
    data = tokenize_samples([s], tok, max_length=96, truncation="prompt")
    prompt_text, scored_text = decoded(tok, data, 0)
    assert scored_text == output + tok.eos_token
    assert prompt_text.startswith(HEAD_NO_INPUT)
    assert prompt_text.endswith("\n\n### Response:")
    assert "### Input:" not in prompt_text
    kept = prompt_text[len(HEAD_NO_INPUT) : -len("\n\n### Response:")]
    assert 0 < len(kept) < len(s.instruction) and s.instruction.startswith(kept)
    assert int(data.lengths[0]) <= 96
    assert int(data.truncated[0]) > 0 and bool(data.prompt_shortened[0])


def test_long_response_right_cuts_it_prompt_keeps_as_much_response_as_fits(tok):
    instruction, output = "Describe the dog.", "The lazy dog. " * 80
    s = Sample(0, instruction, "", output)
    prompt = render_prompt(instruction, "")
    n_prompt = len(ids_of(tok, prompt))
    full = ids_of(tok, prompt + output + tok.eos_token)
    assert n_prompt < 128 < len(full)

    right = tokenize_samples([s], tok, max_length=128, truncation="right")
    t, m = right.row(0)
    assert list(t) == full[:128]
    assert list(m) == [False] * n_prompt + [True] * (128 - n_prompt)
    assert int(right.n_scored[0]) == 128 - n_prompt
    assert int(right.truncated[0]) == len(full) - 128 and not bool(right.prompt_shortened[0])

    kept = tokenize_samples([s], tok, max_length=128, truncation="prompt")
    assert int(kept.lengths[0]) == 128
    prompt_text, scored_text = decoded(tok, kept, 0)
    assert prompt_text.endswith("\n\n### Response:") and "### Instruction:" in prompt_text
    assert output.startswith(scored_text)  # a prefix of the response, no EOS (it did not fit)
    assert int(kept.n_scored[0]) >= int(right.n_scored[0])
    assert int(kept.truncated[0]) > 0


@pytest.mark.parametrize("mode", ["prompt", "right"])
@pytest.mark.parametrize("max_length", [2, 16, 50, 97])
def test_lengths_never_exceed_max_length(tok, mode, max_length):
    samples = [
        Sample(0, "Add 2 and 3.", "", "The answer is 5."),
        Sample(1, LONG_INSTRUCTION, LONG_INPUT, "It is quick."),
        Sample(2, "Describe", "", "The lazy dog. " * 80),
        Sample(3, "Describe", LONG_INPUT, "It is quick. " * 30),
        Sample(4, "x", "y", "z"),
    ]
    data = tokenize_samples(samples, tok, max_length=max_length, truncation=mode)
    assert (data.lengths <= max_length).all()
    assert (data.lengths > 0).all()
    full = [len(ids_of(tok, render_prompt(s.instruction, s.input) + s.output + tok.eos_token))
            for s in samples]
    for i, n in enumerate(full):
        # what was cut is recorded: kept + cut == untruncated length
        assert int(data.lengths[i]) + int(data.truncated[i]) == n
        assert (int(data.truncated[i]) > 0) == (n > max_length)


def test_prompt_mode_scores_every_row_that_right_mode_loses(tok):
    samples = [Sample(i, LONG_INSTRUCTION, LONG_INPUT if i % 2 else "", f"Answer number {i}.")
               for i in range(4)]
    right = tokenize_samples(samples, tok, max_length=100, truncation="right")
    prompt = tokenize_samples(samples, tok, max_length=100, truncation="prompt")
    assert (right.n_scored == 0).all()
    assert (prompt.n_scored > 0).all()
    assert prompt.prompt_shortened.all() and not right.prompt_shortened.any()


def test_bad_truncation_mode_is_refused(tok):
    with pytest.raises(ValueError, match="truncation"):
        tokenize_samples([Sample(0, "a", "", "b")], tok, truncation="left")


# ------------------------------------------------------------------------------------------ chat


def _chat_file(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_chat_scores_only_assistant_turns(tok, tmp_path):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Add 2 and 3."},
        {"role": "assistant", "content": "The answer is 5."},
        {"role": "user", "content": "And 4 and 4?"},
        {"role": "assistant", "content": "It is 8."},
    ]
    single = [{"role": "user", "content": "Name a fox."},
              {"role": "assistant", "content": "Quick brown fox."}]
    ds = read_dataset(_chat_file(tmp_path, [{"messages": messages}, {"messages": single}]))
    data = tokenize_samples(ds.samples, tok, max_length=512)

    text = "".join(f"<|{m['role']}|>{m['content']}<eos>" for m in messages)  # the tiny chat template
    t, m = data.row(0)
    assert tok.decode(t) == text
    # scored tokens, grouped into runs: exactly the two assistant contents with their end-of-turn marker
    runs, current = [], []
    for tid, is_scored in zip(np.asarray(t), np.asarray(m), strict=True):
        if is_scored:
            current.append(int(tid))
        elif current:
            runs.append(tok.decode(current))
            current = []
    if current:
        runs.append(tok.decode(current))
    assert runs == ["The answer is 5.<eos>", "It is 8.<eos>"]
    n_expected = len(ids_of(tok, "The answer is 5.<eos>")) + len(ids_of(tok, "It is 8.<eos>"))
    assert int(data.n_scored[0]) == n_expected

    _, scored_text = decoded(tok, data, 1)
    assert scored_text == "Quick brown fox.<eos>"
    assert tok.decode(data.row(1)[0]) == "<|user|>Name a fox.<eos><|assistant|>Quick brown fox.<eos>"


BRIEF_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>{% endfor %}"  # no gen. prompt


@pytest.mark.parametrize("template", ["tiny", "no_generation_prompt"])
def test_chat_scored_positions_of_a_two_turn_conversation(tok, template):
    """The scored positions, stated piece by piece: a piece's tokens are scored iff it is an assistant turn's
    content or the end-of-turn token after it. The template without a generation prompt used to score the
    ``<|assistant|>`` marker (the turns before an answer, rendered, end before its header)."""
    import copy

    t = copy.deepcopy(tok)
    if template == "no_generation_prompt":
        t.chat_template = BRIEF_TEMPLATE
    messages = [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "It is 5."},
                {"role": "user", "content": "And 4 and 4?"}, {"role": "assistant", "content": "8"}]
    pieces = [("<|user|>", False), ("Add 2 and 3.", False), ("<eos>", False),
              ("<|assistant|>", False), ("It is 5.", True), ("<eos>", True),
              ("<|user|>", False), ("And 4 and 4?", False), ("<eos>", False),
              ("<|assistant|>", False), ("8", True), ("<eos>", True)]
    expected_ids: list[int] = []
    expected_mask: list[bool] = []
    for text, scored in pieces:
        ids = t("".join(text), add_special_tokens=False).input_ids
        expected_ids += ids
        expected_mask += [scored] * len(ids)
    data = tokenize_samples([Sample(0, "", "", "", messages=tuple(messages))], t, max_length=512)
    ids, mask = data.row(0)
    assert list(ids) == expected_ids, "precondition: the tiny tokenizer does not merge across these pieces"
    assert np.flatnonzero(mask).tolist() == np.flatnonzero(expected_mask).tolist()
    # by hand: <|user|> 7 tokens, "Add 2 and 3." 10, <eos> 1, <|assistant|> 11 -> "It is 5." (6) starts at 29,
    # its <eos> is 35; then 7 + 10 + 1 + 11 more -> "8" at 65, its <eos> at 66
    assert [int(i) for i in np.flatnonzero(mask)] == [*range(29, 36), 65, 66]


def test_chat_assistant_first_turn_and_system_turn_are_not_scored(tok):
    """An assistant turn at position 0 is scored from its content on; a system turn never is."""
    messages = ({"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Bye."})
    data = tokenize_samples([Sample(0, "", "", "", messages=messages)], tok, max_length=512)
    assert decoded(tok, data, 0)[1] == "Hello.<eos>Bye.<eos>"
    system = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
              {"role": "assistant", "content": "Yo."})
    data = tokenize_samples([Sample(0, "", "", "", messages=system)], tok, max_length=512)
    assert decoded(tok, data, 0) == ("<|system|>Be brief.<eos><|user|>Hi<eos><|assistant|>", "Yo.<eos>")


def test_conversational_prompt_completion_scores_only_the_completion(tok, tmp_path):
    """TRL's prompt/completion with messages: an assistant turn inside the prompt is context, not a label."""
    row = {"prompt": [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "It is 5."},
                      {"role": "user", "content": "Doubled?"}],
           "completion": [{"role": "assistant", "content": "It is 10."}]}
    ds = read_dataset(_chat_file(tmp_path, [row]))
    data = tokenize_samples(ds.samples, tok, max_length=512)
    assert decoded(tok, data, 0) == (
        "<|user|>Add 2 and 3.<eos><|assistant|>It is 5.<eos><|user|>Doubled?<eos><|assistant|>", "It is 10.<eos>")


def test_sharegpt_scores_like_chat(tok, tmp_path):
    row = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                             {"from": "gpt", "value": "Yo."}, {"from": "human", "value": "Bye"},
                             {"from": "gpt", "value": "Ciao."}]}
    data = tokenize_samples(read_dataset(_chat_file(tmp_path, [row])).samples, tok, max_length=512)
    assert decoded(tok, data, 0) == (
        "<|system|>Be brief.<eos><|user|>Hi<eos><|assistant|><|user|>Bye<eos><|assistant|>", "Yo.<eos>Ciao.<eos>")


def test_chat_and_alpaca_rows_keep_their_order(tok, tmp_path):
    """A chunk with chat rows between plain rows keeps row i at position i."""
    samples = [
        Sample(0, "Add 2 and 3.", "", "Five."),
        Sample(1, "q", "", "a", messages=({"role": "user", "content": "Hi"},
                                          {"role": "assistant", "content": "Hello there."})),
        Sample(2, "Add 4 and 4.", "", "Eight."),
    ]
    data = tokenize_samples(samples, tok, max_length=512)
    assert decoded(tok, data, 0)[1] == "Five.<eos>"
    assert decoded(tok, data, 1)[1] == "Hello there.<eos>"
    assert decoded(tok, data, 2)[1] == "Eight.<eos>"


def test_rows_across_chunk_boundaries_equal_rows_tokenised_alone(tok):
    """Tokenisation packs rows in chunks (256); 2,100 rows span several chunks and must join seamlessly."""
    from lpselect.data.tokenize import tokenize_responses

    samples = [Sample(i, f"Add {i} and 3.", "fox " * (i % 5), "The answer. " * (1 + i % 7)) for i in range(2100)]
    data = tokenize_samples(samples, tok, max_length=24, truncation="prompt")
    resp = tokenize_responses(samples, tok, max_length=8)
    assert len(data) == len(resp) == 2100 and data.offsets[0] == 0 and data.offsets[-1] == len(data.tokens)
    for i in (0, 255, 256, 257, 1023, 1024, 2047, 2048, 2099):
        alone = tokenize_samples([samples[i]], tok, max_length=24, truncation="prompt")
        np.testing.assert_array_equal(data.row(i)[0], alone.row(0)[0])
        np.testing.assert_array_equal(data.row(i)[1], alone.row(0)[1])
        assert data.truncated[i] == alone.truncated[0]
        assert data.prompt_shortened[i] == alone.prompt_shortened[0]
        np.testing.assert_array_equal(resp.row(i)[0], tokenize_responses([samples[i]], tok, max_length=8).row(0)[0])


def test_n_scored_counts_labels_after_each_rows_first_token():
    """9,000 synthetic rows (several 4,096-row blocks, some empty): n_scored against a plain Python count."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 12, 9000)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    scored = rng.random(int(offsets[-1])) < 0.6
    data = TokenizedData(tokens=np.zeros(len(scored), dtype=np.int32), scored=scored, offsets=offsets,
                         truncated=np.zeros(9000, dtype=np.int32), prompt_shortened=np.zeros(9000, dtype=bool))
    expected = [sum(bool(x) for x in scored[offsets[i] + 1 : offsets[i + 1]]) for i in range(9000)]
    assert data.n_scored.tolist() == expected


# ------------------------------------------------------------------------------------------ save / load


def test_save_load_round_trip_memory_mapped(tok, tmp_path):
    samples = [Sample(i, f"Add {i} and 3.", "The quick brown fox " * i, "The answer. " * (i + 1))
               for i in range(6)]
    data = tokenize_samples(samples, tok, max_length=40, truncation="prompt")
    data.save(tmp_path / "tokens")
    back = TokenizedData.load(tmp_path / "tokens")
    assert isinstance(back.tokens, np.memmap)
    for name in ("tokens", "scored", "offsets", "truncated", "prompt_shortened"):
        a, b = getattr(data, name), getattr(back, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert len(back) == len(data)
    np.testing.assert_array_equal(back.n_scored, data.n_scored)
    np.testing.assert_array_equal(back.lengths, data.lengths)
    for i in range(len(data)):
        np.testing.assert_array_equal(back.row(i)[0], data.row(i)[0])
        np.testing.assert_array_equal(back.row(i)[1], data.row(i)[1])
    eager = TokenizedData.load(tmp_path / "tokens", mmap=False)
    assert not isinstance(eager.tokens, np.memmap)
    np.testing.assert_array_equal(eager.tokens, data.tokens)


def test_prompt_mode_guarantees_half_the_window_to_the_response(tok) -> None:
    """A short prompt is kept whole (the long response is cut from the right); a long prompt is shortened so the
    response keeps min(its length, max_length // 2) tokens."""
    max_length = 128
    short_prompt = Sample(0, "Describe", "", "The lazy dog. " * 80)
    long_both = Sample(1, "Describe " + "the fox " * 100, "", "The lazy dog. " * 80)
    data = tokenize_samples([short_prompt, long_both], tok, max_length=max_length, truncation="prompt")
    right = tokenize_samples([short_prompt, long_both], tok, max_length=max_length, truncation="right")
    # row 0: identical to the reference's cut, instruction intact
    np.testing.assert_array_equal(data.row(0)[0], right.row(0)[0])
    assert not data.prompt_shortened[0]
    n_prompt_0 = len(ids_of(tok, render_prompt("Describe", "")))
    assert int(data.n_scored[0]) == max_length - n_prompt_0
    # row 1: the prompt alone fills the window under "right"; here the response gets at least half of it
    assert int(right.n_scored[1]) == 0
    assert data.prompt_shortened[1]
    assert int(data.n_scored[1]) >= max_length // 2
    assert len(data.row(1)[0]) <= max_length
