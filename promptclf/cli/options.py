"""Click flags generated from a pydantic options model, so each option is declared once.

:func:`flags_from` turns every field of a model into one ``click.option``:

* the flag is ``--field-name`` (``json_schema_extra={"flag": "--timeout"}`` renames it, and
  ``{"short": "-n"}`` adds a short alias);
* the help text is the field's ``description``; the default shown is the model's default;
* a ``Literal`` becomes a ``click.Choice``; ``bool`` a flag (``bool | None`` an on/off pair,
  ``--x/--no-x``); ``list[...]`` a repeatable option, or one comma-separated value with
  ``{"csv": True}``; ``{"path": "file"}`` / ``{"path": "dir"}`` an existing file or folder;
* numbers keep their bounds (``ge``/``le``/``gt``/``lt``) for pydantic to check with the rest.

Every flag's value defaults to None on the command line, so only what the user typed reaches
the model and the model's own defaults stand for the rest (recipes and run files can then fill
what the user left out). :func:`promptclf.options.build_options`, which the library uses too,
builds the model and turns a :class:`pydantic.ValidationError` into one
:class:`~promptclf.errors.ConfigError` that names the flag and the fix.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ..options import cli_extra as _extra
from ..options import flag_name

F = TypeVar("F", bound=Callable[..., Any])


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _click_type(tp: Any, extra: Mapping[str, Any]) -> tuple[Any, bool, bool]:
    """(click type, multiple, is_flag) for one field's annotation."""
    tp = _strip_optional(tp)
    if extra.get("path") in ("file", "dir"):
        kind = extra["path"]
        return click.Path(exists=True, dir_okay=kind == "dir", file_okay=kind == "file"), False, False
    origin = typing.get_origin(tp)
    if origin is Literal:
        return click.Choice([str(a) for a in typing.get_args(tp)]), False, False
    if origin in (list, tuple):
        inner, _, _ = _click_type(typing.get_args(tp)[0], {})
        return inner, True, False
    if tp is bool:
        return None, False, True
    if tp in (int, float, str):
        return tp, False, False
    return str, False, False  # anything else arrives as text and pydantic parses it


def _csv_list(_ctx: click.Context, _param: click.Parameter, value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _help(info: FieldInfo, is_flag: bool) -> str:
    text = info.description or ""
    default = info.get_default(call_default_factory=True)
    if is_flag or default is None or default == [] or (isinstance(default, str) and not default):
        return text
    shown = ", ".join(map(str, default)) if isinstance(default, list) else default
    return f"{text} [default: {shown}]".strip()


def flags_from(model: type[BaseModel]) -> Callable[[F], F]:
    """A decorator adding one click option per field of ``model`` (``{"cli": False}`` leaves one out), in field order."""

    def decorate(fn: F) -> F:
        for name, info in reversed(list(model.model_fields.items())):
            extra = _extra(info)
            if extra.get("cli") is False:
                continue
            ctype, multiple, is_flag = _click_type(info.annotation, extra)
            flag = flag_name(name, info)
            on_off = is_flag and info.default is None  # bool | None: None means "decide for me"
            decls = [f"{flag}/--no-{flag[2:]}" if on_off else flag, name]
            if extra.get("short"):
                decls.insert(0, str(extra["short"]))
            kw: dict[str, Any] = {"help": _help(info, is_flag), "default": None}
            if on_off:
                pass  # click gives True, False, or the default None
            elif is_flag:
                kw.update(is_flag=True, flag_value=True)
            elif extra.get("csv"):
                kw.update(type=str, callback=_csv_list)
            else:
                kw["type"] = ctype
                if multiple:
                    kw.update(multiple=True, default=())
            fn = click.option(*decls, **kw)(fn)
        return fn

    return decorate


def given(values: Mapping[str, Any]) -> dict[str, Any]:
    """The options the user actually gave: None and empty repeatable options dropped, tuples as lists."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        if v is None or v == ():
            continue
        out[k] = list(v) if isinstance(v, tuple) else v
    return out
