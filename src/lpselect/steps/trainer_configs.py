"""How the trainers people use read a subset: LLaMA-Factory's ``dataset_info.json``, and the card's snippets for
TRL's ``SFTTrainer``, axolotl and LLaMA-Factory.

A subset keeps the input's format and column names (a ``--fields`` mapping is in its report), so each trainer
is told the subset's own columns rather than the subset being converted. ``dataset_info.json`` sits beside the
subsets (LLaMA-Factory's ``dataset_dir``); each entry lpselect writes carries an ``lpselect`` key, so a rebuild
replaces lpselect's entries (a removed subset drops out) and keeps every other entry as it is.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpselect.data.formats import read_dataset
from lpselect.data.template import PROMPT_NO_INPUT, PROMPT_WITH_INPUT
from lpselect.errors import LPSelectError
from lpselect.runs.io import atomic_path

log = logging.getLogger(__name__)
DATASET_INFO = "dataset_info.json"
OWNER_KEY = "lpselect"  # marks the entries lpselect wrote (LLaMA-Factory reads only the keys it knows)
# the canonical names of a plain (instruction/input/output) shape, by shape: what plays instruction, input, output
PLAIN_ROLES = {"alpaca": ("instruction", "input", "output"), "dolly": ("instruction", "context", "response"),
               "prompt_completion": ("prompt", None, "completion")}
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "system_tag": "system"}
CHAT_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
             "system_tag": "system"}
PLACEHOLDER_DIR = "path/to/this/folder"


@dataclass(frozen=True)
class SubsetView:
    """A subset as trainers see it: its shape and the columns that hold each canonical field."""

    name: str  # the config / dataset name: the file name without its suffix
    file_name: str  # the file (relative to the folder) a trainer reads
    file_kind: str  # json | parquet | csv | arrow
    schema: str  # alpaca | dolly | chat | sharegpt | prompt_completion
    columns: dict[str, str]  # canonical field -> the subset's column, for the fields its rows have
    conversational: bool = False  # prompt/completion as lists of messages

    def column(self, canonical: str) -> str:
        return self.columns[canonical]


def subset_view(subset: Path, name: str, report: dict[str, Any]) -> SubsetView | None:
    """The view of ``subset`` read as select read its data (the report's --fields); None when it cannot be read
    (a trainer could not read it either: the card then says so)."""
    fields = report.get("fields") if isinstance(report.get("fields"), dict) else None
    try:
        dataset = read_dataset(subset, fields)
    except (LPSelectError, OSError, ValueError) as e:
        log.warning("%s: not described for trainers (%s)", subset, e)
        return None
    file_name, kind = _trainer_file(subset)
    if file_name is None:
        return None
    mapping = dataset.fields or {}
    # every row's keys: a JSONL row may leave out a column (e.g. "input") that later rows have
    present = {key for record in dataset.records if isinstance(record, dict) for key in record}
    names = {"alpaca": PLAIN_ROLES["alpaca"], "dolly": PLAIN_ROLES["dolly"], "chat": ("messages",),
             "sharegpt": ("conversations",), "prompt_completion": ("prompt", "completion")}[dataset.schema]
    columns = {n: mapping.get(n, n) for n in names if n and mapping.get(n, n) in present}
    conversational = dataset.schema == "prompt_completion" and dataset.samples[0].messages is not None
    return SubsetView(name, file_name, kind, dataset.schema, columns, conversational)


def _trainer_file(subset: Path) -> tuple[str | None, str]:
    """The file a trainer reads, relative to the folder: the subset file, or the one Arrow shard of a dataset
    folder (its other files are JSON: LLaMA-Factory refuses a folder of mixed file types)."""
    if not subset.is_dir():
        suffix = subset.suffix.lower()
        return subset.name, "json" if suffix in (".json", ".jsonl", ".ndjson") else suffix.lstrip(".")
    shards = sorted(subset.glob("*.arrow"))
    if len(shards) != 1:
        return None, "arrow"
    return f"{subset.name}/{shards[0].name}", "arrow"


# ---- LLaMA-Factory -------------------------------------------------------------------------------------------


def llamafactory_entry(view: SubsetView, report_name: str) -> dict[str, Any] | None:
    """The subset's ``dataset_info.json`` entry, or None for conversational prompt/completion rows (LLaMA-Factory
    has no format that keeps a conversational prompt apart from its completion)."""
    entry: dict[str, Any] = {"file_name": view.file_name}
    if view.schema in PLAIN_ROLES:
        if view.conversational:
            return None
        prompt, query, response = PLAIN_ROLES[view.schema]
        columns = {"prompt": view.column(prompt), "response": view.column(response)}
        if query and query in view.columns:
            columns["query"] = view.column(query)
        entry.update(formatting="alpaca", columns=columns)
    else:
        field = "messages" if view.schema == "chat" else "conversations"
        entry.update(formatting="sharegpt", columns={"messages": view.column(field)},
                     tags=dict(CHAT_TAGS if view.schema == "chat" else SHAREGPT_TAGS))
    entry[OWNER_KEY] = {"report": report_name}
    return entry


def write_dataset_info(folder: Path, entries: dict[str, dict[str, Any]]) -> set[str]:
    """(Re)write ``folder/dataset_info.json``: ``entries`` replace every entry lpselect wrote before; the others
    (written by a person or another tool) are kept, and one of theirs is never overwritten. Atomic. Returns the
    names of the entries written."""
    path = folder / DATASET_INFO
    existing: dict[str, Any] = {}
    if path.exists():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise LPSelectError(f"{path}: not readable JSON ({e}); fix or move it, then select again") from None
        if not isinstance(existing, dict):
            raise LPSelectError(f"{path}: expected a JSON object of datasets (LLaMA-Factory's format); move it away")
    kept = {k: v for k, v in existing.items() if not (isinstance(v, dict) and OWNER_KEY in v)}
    merged = dict(kept)
    for name, entry in entries.items():
        if name in kept:
            log.warning("%s: the entry '%s' was not written by lpselect and is kept; subset %s has no entry",
                        path, name, entry["file_name"])
            continue
        merged[name] = entry
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(merged, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {name for name in entries if name not in kept}


# ---- the card's "how to train it" -----------------------------------------------------------------------------


def training_section(view: SubsetView, in_dataset_info: bool) -> list[str]:
    """Markdown lines: TRL, axolotl and LLaMA-Factory reading this subset as it is."""
    lines = ["**Train it** (paths relative to this folder):", "", "TRL:", "", "```python",
             *_trl_lines(view), "```", ""]
    axolotl = _axolotl_lines(view)
    if axolotl:
        lines += ["axolotl:", "", "```yaml", *axolotl, "```", ""]
    if in_dataset_info:
        lines += [f"LLaMA-Factory (`{DATASET_INFO}` here has the entry; add your model's `template`):", "",
                  "```yaml", f"dataset: {view.name}", f"dataset_dir: {PLACEHOLDER_DIR}", "```", ""]
        if view.schema in PLAIN_ROLES:
            lines += ["LLaMA-Factory joins instruction and input with a newline inside the model's own chat "
                      "template, so it does not train on the prompt the scorer saw; the TRL snippet above does.", ""]
    else:
        lines += ["LLaMA-Factory: no entry (it has no format for a conversational prompt kept apart from its "
                  "completion).", ""]
    return lines


def _load_line(view: SubsetView) -> str:
    if view.file_kind == "arrow":
        return f'ds = load_from_disk("{view.file_name.split("/", 1)[0]}")'
    return f'ds = load_dataset("{view.file_kind}", data_files="{view.file_name}", split="train")'


def _trl_lines(view: SubsetView) -> list[str]:
    """TRL reads ``messages`` and ``prompt``/``completion`` columns; plain rows get the Alpaca prompt the scorer
    saw (docs/method.md §3), so the completion is trained on what was scored."""
    loader = "load_from_disk" if view.file_kind == "arrow" else "load_dataset"
    head = [f"from datasets import {loader}", "from trl import SFTConfig, SFTTrainer", "", _load_line(view)]
    if view.schema in PLAIN_ROLES and not view.conversational:
        instruction, input_, output = (view.columns.get(r) if r else None for r in PLAIN_ROLES[view.schema])
        if input_:
            text_in = f'(r["{input_}"] or "")'
            head += [f"WITH_INPUT = {json.dumps(PROMPT_WITH_INPUT)}", f"NO_INPUT = {json.dumps(PROMPT_NO_INPUT)}",
                     f"ds = ds.map(lambda r: {{\"prompt\": (WITH_INPUT if {text_in} else NO_INPUT).format(",
                     f"    instruction=r[\"{instruction}\"], input={text_in}), \"completion\": r[\"{output}\"]}},",
                     "    remove_columns=ds.column_names)"]
        else:
            head += [f"NO_INPUT = {json.dumps(PROMPT_NO_INPUT)}",
                     f"ds = ds.map(lambda r: {{\"prompt\": NO_INPUT.format(instruction=r[\"{instruction}\"]), "
                     f"\"completion\": r[\"{output}\"]}},", "    remove_columns=ds.column_names)"]
    elif view.schema == "sharegpt":
        col = view.column("conversations")
        head += ['ROLES = {"system": "system", "human": "user", "gpt": "assistant"}',
                 f'ds = ds.map(lambda r: {{"messages": [{{"role": ROLES[t["from"]], "content": t["value"]}} '
                 f'for t in r["{col}"]]}},', "    remove_columns=ds.column_names)"]
    else:
        wanted = ["messages"] if view.schema == "chat" else ["prompt", "completion"]
        for name in wanted:
            if view.column(name) != name:
                head.append(f'ds = ds.rename_column("{view.column(name)}", "{name}")')
        head.append(f"ds = ds.select_columns({wanted!r})".replace("'", '"'))
    return [*head, f'trainer = SFTTrainer(model="YOUR/MODEL", train_dataset=ds, '
            f'args=SFTConfig(output_dir="{view.name}-sft"))', "trainer.train()"]


def _axolotl_lines(view: SubsetView) -> list[str]:
    """A ``datasets:`` block: a user-defined format with the scorer's exact Alpaca prompt for plain columns
    (axolotl's built-in ``alpaca`` ends its prompt with a newline the scorer did not see), ``chat_template`` for
    conversations; none for conversational prompt/completion."""
    if view.conversational:
        return []
    if view.file_kind == "arrow":
        lines = ["datasets:", f"  - path: {PLACEHOLDER_DIR}/{view.file_name.split('/', 1)[0]}"]
    else:
        lines = ["datasets:", f"  - path: {PLACEHOLDER_DIR}/{view.file_name}", f"    ds_type: {view.file_kind}"]
    if view.schema in PLAIN_ROLES:
        instruction, input_, output = (view.columns.get(r) if r else None for r in PLAIN_ROLES[view.schema])
        lines += ["    type:", f"      field_instruction: {instruction}"]
        lines += [f"      field_input: {input_}"] if input_ else []
        return [*lines, f"      field_output: {output}", f"      format: {json.dumps(PROMPT_WITH_INPUT)}",
                f"      no_input_format: {json.dumps(PROMPT_NO_INPUT)}"]
    if view.schema == "chat":
        return [*lines, "    type: chat_template", f"    field_messages: {view.column('messages')}",
                "    message_property_mappings:", "      role: role", "      content: content"]
    return [*lines, "    type: chat_template", f"    field_messages: {view.column('conversations')}",
            "    message_property_mappings:", "      role: from", "      content: value",
            "    roles:", "      user: [human]", "      assistant: [gpt]", "      system: [system]"]
