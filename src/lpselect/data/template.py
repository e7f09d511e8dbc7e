"""The prompt template of docs/method.md §3 and the embedding text of §7: the one place they are spelled out."""

from __future__ import annotations

from lpselect.data.formats import Sample

PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)


def render_prompt(instruction: str, input: str, *, with_input: bool | None = None) -> str:
    """Alpaca prompt; ``with_input`` keeps the Input marker even when the (shortened) input is empty."""
    use_input = bool(input) if with_input is None else with_input
    template = PROMPT_WITH_INPUT if use_input else PROMPT_NO_INPUT
    return template.format(instruction=instruction, input=input)


def embedding_text(sample: Sample) -> str:
    """docs/method.md §7: the text each sample is embedded by for clustering.

    A conversation reads as its turns in order ("Instruction: q1 Response: a1 Instruction: q2 ..."), so each
    answer sits next to its question and the embedder's token limit cuts the last turns, not every answer; a
    single turn gives exactly docs/method.md §7's text. The system turn is left out: often shared by every row, it would
    pull unrelated rows together."""
    if sample.messages is not None:
        labels = {"user": "Instruction: ", "assistant": "Response: "}
        return " ".join(labels[m["role"]] + m["content"].strip() for m in sample.messages if m["role"] in labels)
    question = (sample.instruction.strip() + " " + sample.input.strip()).strip()
    return "Instruction: " + question + " Response: " + sample.output.strip()
