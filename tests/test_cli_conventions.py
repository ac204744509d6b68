"""Every recon command follows one convention, checked on its own --help (issue 27: a newcomer finds the same
option spelled the same way everywhere). The commands are found from pyproject's console scripts and the
`recon` group, so a command or option added later is checked too. The convention lives in
`recon.runtime.cli.base` (Command / Group / parse_size)."""

from __future__ import annotations

import importlib
from pathlib import Path

import click
import pytest
import tomllib
from click.testing import CliRunner

from recon.runtime.cli.base import parse_size, recon_version

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def _command(target: str) -> click.Command:
    module, _, name = target.partition(":")
    found = getattr(importlib.import_module(module), name)
    # recon-export's entry point is a function around its click command `cli`
    return found if isinstance(found, click.Command) else importlib.import_module(module).cli


def _all_commands() -> dict[str, click.Command]:
    commands = {script: _command(target) for script, target in SCRIPTS.items()}
    group = commands["recon"]
    assert isinstance(group, click.Group)
    context = click.Context(group)
    for name in group.list_commands(context):
        commands[f"recon {name}"] = group.get_command(context, name)
    return commands


COMMANDS = _all_commands()


def _options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option)]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_answers_dash_h_and_version_with_examples(name):
    command = COMMANDS[name]
    short = CliRunner().invoke(command, ["-h"], prog_name=name)
    assert short.exit_code == 0, short.output
    assert short.output == CliRunner().invoke(command, ["--help"], prog_name=name).output
    assert "Usage:" in short.output and "--version" in short.output
    assert "Examples:" in short.output, f"{name} --help shows no examples"
    version = CliRunner().invoke(command, ["--version"], prog_name=name)
    assert version.exit_code == 0 and recon_version() in version.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help_and_shows_its_default(name):
    command = COMMANDS[name]
    context = click.Context(command, info_name=name, **command.context_settings)
    for option in _options(command):
        if option.hidden or option.name in ("help",):
            continue
        assert option.help, f"{name} {option.opts[0]} has no help text"
        record = option.get_help_record(context)
        shows = record is not None and ("default:" in record[1] or "[" in record[1])
        unset = option.default is None or option.default is getattr(click.core, "UNSET", None)  # click ≥ 8.2
        has_default = not unset and not option.is_flag and not option.multiple
        assert shows or not has_default, f"{name} {option.opts[0]} hides its default {option.default!r}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_json_is_a_flag_for_stdout_and_size_means_one_thing(name):
    for option in _options(COMMANDS[name]):
        if "--json" in option.opts:
            assert option.is_flag, f"{name} --json takes a value; a file goes to --json-out"
        if "--size" in option.opts:
            callback = option.callback
            assert callback is parse_size or (
                callback is not None and callback.__module__ == "recon.training.task_options"
            ), f"{name} --size is parsed its own way"


def test_size_is_n_or_h_comma_w_everywhere():
    assert parse_size(None, None, "512") == (512, 512)
    assert parse_size(None, None, "512,384") == (512, 384)
    assert parse_size(None, None, ("64", "32,16")) == [(64, 64), (32, 16)]
    for bad in ("512 384", "a,b", "0", "1,2,3"):
        with pytest.raises(click.BadParameter):
            parse_size(None, None, bad)
