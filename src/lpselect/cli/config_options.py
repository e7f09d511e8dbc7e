"""CLI options generated from a step's pydantic config: one flag per field, with the field's type, default and
description, so a setting and its flag cannot drift apart.

    @app.command("score")
    @friendly
    @config_options(ScoreConfig)
    def score_cmd(data: DataOpt, out_dir: OutRun, config: ScoreConfig) -> None: ...

The command's own parameters (data, out, force ...) keep their place; every field of the config becomes an option
``--field-name`` (a bool: ``--field-name/--no-field-name``), and the command receives the validated config as
``config``. A value the config refuses is one line naming the flag.

Help stays readable at 80 columns: each flag sits in a panel (:data:`FINE_TUNE_PANELS` for fine-tuning settings,
one panel per step for the others), a long list of choices shows as ``<field>`` (the description names them),
and a switch that is off by default shows ``--field`` alone (``--no-field`` is still taken, hidden), because rich
cuts flag names when the columns do not fit.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection, Sequence
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from lpselect.config import BillConfig, ClusterConfig, FineTuneSettings, GenerateConfig, JudgeConfig, SubsetSpec
from lpselect.errors import LPSelectError

F = TypeVar("F", bound=Callable[..., Any])


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def field_help(info: FieldInfo) -> str:
    """A field's description as option help: as written (it may begin with a value or a variable, 'auto: ...',
    'k is ...'), ending with a full stop."""
    text = info.description or ""
    return text + ("" if text.endswith(".") or not text else ".")


#: choices longer than this (``<a|b|c>``) show as ``<field>``, the choices listed in the help
MAX_CHOICES_WIDTH = 16
#: the hidden ``--no-FIELD`` of a switch that is off by default: ``NEGATED + field``
NEGATED = "no__"


#: the ``--help`` panel of each fine-tuning setting (score, train, plan), by field name
FINE_TUNE_PANELS = {
    panel: names.split()
    for panel, names in {
        "Data": "max_length truncation",
        "Model": "model gguf_file precision attn_implementation gradient_checkpointing",
        "Training": "epochs schedule_epochs max_steps seed lr weight_decay warmup_ratio batch_size grad_accum "
                    "max_grad_norm",
        "LoRA": "lora lora_r lora_alpha lora_dropout lora_target_modules",
        "Scoring": "max_tokens_per_batch pass_chunk_rows ifd",
        "Output": "save_steps save_minutes keep_checkpoint save_adapter save_dtype",
        "Parallelism": "device fsdp max_tokens_per_micro_batch",
    }.items()
}
PANEL_OF_FIELD = {name: panel for panel, names in FINE_TUNE_PANELS.items() for name in names}
#: the order of the panels in ``--help`` (typer's own 'Options' panel comes first)
PANEL_ORDER = ("Data", "Model", "Training", "Scoring", "Selection", "Clustering", "Generation", "Judge", "Estimate",
               "Target", "LoRA", "Parallelism", "Output")
#: the other steps: every setting in one panel
STEP_PANELS: dict[type[BaseModel], str] = {ClusterConfig: "Clustering", SubsetSpec: "Selection",
                                           GenerateConfig: "Generation", JudgeConfig: "Judge",
                                           BillConfig: "Target"}


def field_panel(model: type[BaseModel], name: str) -> str | None:
    """The help panel of a setting; None (typer's 'Options') for a model this module does not know."""
    if issubclass(model, FineTuneSettings):
        return PANEL_OF_FIELD[name]
    return next((panel for step, panel in STEP_PANELS.items() if issubclass(model, step)), None)


def choices_metavar(name: str, info: FieldInfo) -> str | None:
    """A short metavar (``<metric>``) for a long list of choices (optional or not), which the field's description
    names instead."""
    choices = next((t for t in (info.annotation, *get_args(info.annotation)) if get_origin(t) is Literal), None)
    if choices is None:
        return None
    if len("<" + "|".join(str(c) for c in get_args(choices)) + ">") <= MAX_CHOICES_WIDTH:
        return None
    return f"<{name.replace('_', '-')}>"


def option_for(model: type[BaseModel], name: str, info: FieldInfo) -> list[inspect.Parameter]:
    """The typer parameters of one config field: one, or for a switch that is off by default, ``--field`` and a
    hidden ``--no-field`` (a ``--field/--no-field`` pair needs a second column that cuts long names at 80
    columns)."""
    flag = flag_name(name)
    panel = field_panel(model, name)
    default = info.get_default(call_default_factory=True)
    if info.annotation is bool:
        if default:
            option = typer.Option(f"{flag}/--no-{flag[2:]}", help=field_help(info), show_default=False,
                                  rich_help_panel=panel)
            return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                      annotation=Annotated[bool, option])]
        on = typer.Option(flag, help=field_help(info), rich_help_panel=panel)
        off = typer.Option(f"--no-{flag[2:]}", hidden=True)
        return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[bool, on]),
                inspect.Parameter(NEGATED + name, inspect.Parameter.KEYWORD_ONLY, default=False,
                                  annotation=Annotated[bool, off])]
    option = typer.Option(flag, help=field_help(info), metavar=choices_metavar(name, info), rich_help_panel=panel)
    return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                              annotation=Annotated[info.annotation, option])]


def panel_rank(param: inspect.Parameter) -> int:
    """Where a parameter's panel comes in :data:`PANEL_ORDER` (-1: no panel of ours), so ``--help`` lists the
    panels in one order whatever the order of the command's own parameters."""
    panels = [getattr(m, "rich_help_panel", None) for m in getattr(param.annotation, "__metadata__", ())]
    panel = next((p for p in panels if p), None)
    return PANEL_ORDER.index(panel) if panel in PANEL_ORDER else -1


def config_fields(model: type[BaseModel], only: Sequence[str] | None = None, skip: Collection[str] = ()) -> list[str]:
    """The fields that become options: ``only`` (in that order), or every field, the step's own first and the
    settings it shares with other steps (inherited ones) after them."""
    inherited = {n for base in model.__bases__ for n in getattr(base, "model_fields", {})}
    names = list(only) if only is not None else sorted(model.model_fields, key=lambda n: n in inherited)
    unknown = [n for n in [*names, *skip] if n not in model.model_fields]
    if unknown:
        raise TypeError(f"{model.__name__} has no field {unknown}")
    return [n for n in names if n not in skip]


def config_options(model: type[BaseModel], *, only: Sequence[str] | None = None, skip: Collection[str] = (),
                   into: str = "config") -> Callable[[F], F]:
    """Give the decorated command one option per field of ``model`` (``only`` those, in that order, or all but
    ``skip``); it is called with ``into=model(**those options)``."""
    names = config_fields(model, only, skip)

    def decorate(fn: F) -> F:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != into]
        clash = {p.name for p in own} & set(names)
        if clash:
            raise TypeError(f"{fn.__name__}: parameters {sorted(clash)} are also fields of {model.__name__}")
        required = [p for p in own if p.default is inspect.Parameter.empty]
        optional = [p for p in own if p.default is not inspect.Parameter.empty]
        generated = [p for n in names for p in option_for(model, n, model.model_fields[n])]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in required] + generated + [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in optional]
        params.sort(key=panel_rank)

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            values = {n: kwargs.pop(n) for n in names}
            for n in names:  # a hidden --no-FIELD turns the switch off
                if kwargs.pop(NEGATED + n, False):
                    if values[n]:  # both given: which one meant it is not for us to guess
                        raise LPSelectError(f"{flag_name(n)} and --no-{flag_name(n)[2:]} both given: keep one")
                    values[n] = False
            kwargs[into] = build_config(model, values)
            return fn(**kwargs)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command  # type: ignore[return-value]

    return decorate


def build_config(model: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    """``model(**values)``; a refused value is one error naming its flag (``--lr: Input should be ...``)."""
    try:
        return model(**values)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            where = flag_name(str(err["loc"][0])) + ": " if err["loc"] else ""
            problems.append(where + err["msg"].removeprefix("Value error, "))
        raise LPSelectError("; ".join(problems)) from None
