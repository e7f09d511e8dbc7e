"""CLI options generated from a step's pydantic config: one flag per field, with the field's type, default and
description, so a setting and its flag cannot drift apart.

    @app.command("score")
    @friendly
    @config_options(ScoreConfig)
    def score_cmd(data: DataOpt, out_dir: OutRun, config: ScoreConfig) -> None: ...

The command's own parameters (data, out, force ...) keep their place; every field of the config becomes an option
``--field-name`` (a bool: ``--field-name/--no-field-name``), and the command receives the validated config as
``config``. A value the config refuses is one line naming the flag.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection, Sequence
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from lpselect.errors import LPSelectError

F = TypeVar("F", bound=Callable[..., Any])


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def field_help(info: FieldInfo) -> str:
    """A field's description as option help: as written (it may begin with a value or a variable, 'auto: ...',
    'k is ...'), ending with a full stop."""
    text = info.description or ""
    return text + ("" if text.endswith(".") or not text else ".")


def option_for(name: str, info: FieldInfo) -> inspect.Parameter:
    """The typer parameter of one config field."""
    flag = flag_name(name)
    switch = info.annotation is bool
    option = typer.Option(f"{flag}/--no-{flag[2:]}" if switch else flag, help=field_help(info),
                          show_default=not switch)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info.get_default(call_default_factory=True),
                             annotation=Annotated[info.annotation, option])


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
        generated = [option_for(n, model.model_fields[n]) for n in names]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in required] + generated + [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in optional]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            values = {n: kwargs.pop(n) for n in names}
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
