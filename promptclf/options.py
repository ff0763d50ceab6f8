"""Options as pydantic models: the one helper that validates them at the edge.

Every stage declares its options once, as a pydantic model whose fields carry their help text
(``description``) and, where the command-line flag differs from the field name, the flag
(``json_schema_extra={"flag": "--timeout"}``). The CLI generates its flags from those models
(:mod:`promptclf.cli.options`); :func:`build_options` builds a model from what was given and turns a
:class:`pydantic.ValidationError` into one :class:`~promptclf.errors.ConfigError` line that names
each bad flag and what it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from .errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def cli_extra(info: FieldInfo) -> dict[str, Any]:
    """A field's command-line settings (``flag``, ``short``, ``path``, ``cli``) from its ``json_schema_extra``."""
    extra = info.json_schema_extra
    return dict(extra) if isinstance(extra, dict) else {}


def flag_name(name: str, info: FieldInfo) -> str:
    """The public flag of field ``name``: ``--name-with-dashes`` unless the field renames it."""
    return str(cli_extra(info).get("flag") or "--" + name.replace("_", "-"))


def config_error(exc: ValidationError, model: type[BaseModel] | None = None, where: str = "") -> ConfigError:
    """One line for every problem in ``exc``, each naming its flag (``--batch-size: ...``)."""
    fields = model.model_fields if model is not None else {}
    msgs = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        field = loc[0] if loc else ""
        if field in fields:
            what = flag_name(field, fields[field]) + ("." + ".".join(loc[1:]) if loc[1:] else "")
        else:
            what = ".".join(loc) or "options"
        msg = str(err["msg"]).removeprefix("Value error, ")
        msgs.append(f"{what}: {msg}")
    return ConfigError((f"{where}: " if where else "") + "; ".join(msgs))


def build_options(model: type[M], values: Mapping[str, Any], where: str = "") -> M:
    """``model(**values)`` (None values left to the model's defaults); errors as one :class:`ConfigError`."""
    try:
        return model(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise config_error(exc, model, where) from exc
