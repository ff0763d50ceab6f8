"""CLI flags are generated from the pydantic option models: one flag per field, with the field's
help, choices and default; a bad value gives one line naming the flag, with ConfigError's exit code."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

import click
import pytest
from click.testing import CliRunner
from pydantic import BaseModel, Field

from promptclf.cli import main
from promptclf.cli.options import flags_from, given
from promptclf.distill.options import DistillOptions
from promptclf.errors import ConfigError
from promptclf.label.options import LabelOptions
from promptclf.options import build_options, cli_extra, flag_name
from promptclf.predict.options import PredictOptions, RayOptions
from promptclf.review.options import ReviewOptions

COMMANDS: dict[str, list[type[BaseModel]]] = {
    "label": [LabelOptions],
    "distill": [DistillOptions],
    "review": [ReviewOptions],
    "predict": [PredictOptions, RayOptions],
}


def _params(command: str) -> dict[str, click.Parameter]:
    cmd = main.commands[command]
    return {p.name: p for p in cmd.params if p.name}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_field_is_a_flag_with_its_help_choices_and_default(command: str) -> None:
    params = _params(command)
    for model in COMMANDS[command]:
        for name, info in model.model_fields.items():
            if cli_extra(info).get("cli") is False:
                assert name not in params
                continue
            p = params[name]
            assert isinstance(p, click.Option)
            assert flag_name(name, info) in p.opts, (command, name, p.opts)
            assert info.description and info.description in (p.help or ""), f"{command} {name}: help from the model"
            assert p.default in (None, ()), "the model's default stands when a flag is not given"
            if typing.get_origin(info.annotation) is Literal:
                assert isinstance(p.type, click.Choice)
                assert list(p.type.choices) == [str(a) for a in typing.get_args(info.annotation)]
            default = info.get_default(call_default_factory=True)
            if default not in (None, "", []) and not isinstance(default, bool):
                shown = ", ".join(map(str, default)) if isinstance(default, list) else str(default)
                assert f"[default: {shown}]" in (p.help or ""), (command, name)


def test_public_flag_names_are_kept() -> None:
    label, distill, predict = _params("label"), _params("distill"), _params("predict")
    assert "--text-col" in label["text_cols"].opts and "--timeout" in label["timeout_s"].opts
    assert "--poll-interval" in label["poll_interval_s"].opts
    assert "--lr" in distill["learning_rate"].opts and "--eval" in distill["eval_file"].opts
    assert "--no-gradient-checkpointing" in distill["gradient_checkpointing"].secondary_opts
    assert "--workers" in predict["workers"].opts and "--probs" in predict["probs"].opts


class Toy(BaseModel):
    size: int = Field(3, ge=1, description="How many.")
    mode: Literal["a", "b"] = Field("a", description="Which.")
    fast: bool = Field(False, description="Go fast.")
    check: bool | None = Field(None, description="Check; default decided later.")
    cols: list[str] = Field(
        default_factory=lambda: ["text"], description="Columns.", json_schema_extra={"flag": "--col"}
    )
    targets: list[str] | None = Field(None, description="Targets.", json_schema_extra={"csv": True})
    where: str | None = Field(None, description="A file.", json_schema_extra={"path": "file"})


def _toy(args: list[str]) -> tuple[int, str, Any]:
    got: dict[str, Any] = {}

    @click.command()
    @flags_from(Toy)
    def cmd(**kw: Any) -> None:
        got["opts"] = build_options(Toy, given(kw))

    res = CliRunner().invoke(cmd, args)
    return res.exit_code, res.output, got.get("opts")


def test_generated_flags_parse_into_the_model(tmp_path: Path) -> None:
    code, _, opts = _toy([])
    assert code == 0 and opts == Toy()
    f = tmp_path / "f.txt"
    f.write_text("x")
    code, out, opts = _toy(
        ["--size", "5", "--mode", "b", "--fast", "--no-check", "--col", "a", "--col", "b", "--targets", "q, v",
         "--where", str(f)]
    )  # fmt: skip
    assert code == 0, out
    assert opts == Toy(size=5, mode="b", fast=True, check=False, cols=["a", "b"], targets=["q", "v"], where=str(f))
    assert _toy(["--mode", "c"])[0] == 2  # not a choice: click's usage error
    assert _toy(["--where", str(tmp_path / "missing")])[0] == 2


def test_a_bad_value_names_its_flag() -> None:
    with pytest.raises(ConfigError, match=r"^--size: Input should be greater than or equal to 1$"):
        build_options(Toy, {"size": 0})
    with pytest.raises(ConfigError, match=r"--batch-size: .*greater than or equal to 1"):
        LabelOptions.build(batch_size=0)
    with pytest.raises(ConfigError, match=r"--lr: "):
        DistillOptions.build(learning_rate=-1.0)


def test_cli_bad_option_is_one_line_with_the_config_exit_code(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("text\nhello\n")
    res = CliRunner().invoke(main, ["label", str(src), "--batch-size", "0", "--provider", "local"])
    assert res.exit_code == ConfigError.exit_code
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines == ["promptclf: error: --batch-size: Input should be greater than or equal to 1"]
    res = CliRunner().invoke(main, ["review", str(src), "--folds", "1"])
    assert res.exit_code == ConfigError.exit_code and "--folds:" in res.output
    run = tmp_path / "run"
    run.mkdir()
    res = CliRunner().invoke(main, ["predict", str(run), str(src), "-o", str(tmp_path / "o.csv"), "--workers", "2"])
    assert res.exit_code == 2 and "--workers go with --engine ray" in res.output
