"""The named flags of `skillearn` read their knobs: type, choices and help are declared once."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from skillearn.knobs import Knob
from skillearn.platform import cli
from skillearn.platform.validate import SweepRequest
from skillearn.trainables.common import COMMON_KNOBS


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    return next(a for a in parser._actions if a.dest == "command").choices[name]


def _action(parser: argparse.ArgumentParser, dest: str) -> argparse.Action:
    return next(a for a in parser._actions if a.dest == dest)


def test_every_named_sweep_flag_is_its_knob() -> None:
    sweep = _subcommand(cli.build_parser(), "sweep")
    for name in (*cli.SWEEP_DATA_KNOBS, *cli.SWEEP_TRIAL_KNOBS):
        knob, action = cli.flag_knob(name), _action(sweep, name)
        assert action.option_strings == ["--" + name.replace("_", "-")]
        assert action.help == knob.help
        assert action.default is None  # unset: the skill's own default applies
        if isinstance(knob.default, bool):
            assert action.nargs == 0 and action.const is True
        else:
            assert action.type is type(knob.default)
            assert action.choices == knob.choices


def test_a_knob_change_shows_in_the_cli_without_editing_it(monkeypatch, capsys) -> None:
    noise_type = COMMON_KNOBS["noise_type"]
    changed = dataclasses.replace(noise_type, help="label-noise model, now with 'sym'",
                                  choices=(*noise_type.choices, "sym"))
    monkeypatch.setitem(COMMON_KNOBS, "noise_type", changed)
    monkeypatch.setitem(COMMON_KNOBS, "epochs", Knob(4, "search epochs, changed", low=1))
    parser = cli.build_parser()
    sweep, compare = _subcommand(parser, "sweep"), _subcommand(parser, "compare")
    assert _action(sweep, "noise_type").choices == changed.choices
    assert _action(compare, "noise_type").choices == changed.choices  # its own help, same choices
    assert _action(sweep, "noise_type").help == changed.help
    assert _action(sweep, "epochs").help == "search epochs, changed"
    assert parser.parse_args(["sweep", "darts", "--noise-type", "sym"]).noise_type == "sym"
    with pytest.raises(SystemExit):
        parser.parse_args(["sweep", "darts", "--help"])
    shown = capsys.readouterr().out
    assert "{uniform,flip,flip2,pair,sym}" in shown and "now with 'sym'" in shown


def test_flags_are_typed_and_refused_as_their_knobs(capsys) -> None:
    args = cli.build_parser().parse_args(
        ["sweep", "darts", "--noise-rate", "0.2", "--epochs", "3", "--download"])
    assert (args.noise_rate, args.epochs, args.download, args.method) == (0.2, 3, True, None)
    assert cli.main(["sweep", "darts", "--noise-type", "both"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("skillearn: error: argument --noise-type: invalid choice: 'both'")
    assert "\n" not in err


def test_retrain_flags_are_the_retrain_knobs() -> None:
    retrain = _subcommand(cli.build_parser(), "retrain")
    assert _action(retrain, "retrain_recipe").option_strings == ["--recipe"]
    assert _action(retrain, "retrain_recipe").choices == COMMON_KNOBS["retrain_recipe"].choices
    assert _action(retrain, "retrain_channels").option_strings == ["--channels"]
    assert {a.dest for a in retrain._actions} >= set(cli.RETRAIN_KNOBS)


def test_sweep_option_defaults_are_the_requests() -> None:
    """`skillearn sweep` with no options asks for what `skillearn.sweep` does by default."""
    args = cli.build_parser().parse_args(["sweep", "darts"])
    for field in dataclasses.fields(SweepRequest):
        if field.name not in ("skill", "overrides"):
            given = getattr(args, field.name)
            given = tuple(given) if isinstance(given, list) else given  # argparse appends lists
            assert given == field.default, field.name


def test_no_knob_is_named_like_a_sweep_option() -> None:
    """`skillearn.sweep(skill, **arguments)` reads SweepRequest's fields as options and the rest
    as knobs: a knob of the same name could never be set from Python."""
    from skillearn.trainables.registry import all_knobs, available_skills, get_skill

    options = {f.name for f in dataclasses.fields(SweepRequest)}
    for skill in available_skills():
        assert not options & set(all_knobs(get_skill(skill))), skill


def test_python_sweep_options_and_knobs_are_told_apart(tmp_path) -> None:
    import skillearn
    from skillearn.knobs import ConfigError

    with pytest.raises(ConfigError, match="unknown setting 'sampels'"):  # a mistyped option
        skillearn.sweep("darts", sampels=2, storage=str(tmp_path / "runs"))
    with pytest.raises(skillearn.SkillearnError, match="--samples must be at least 1"):
        skillearn.sweep("darts", samples=0, epochs=1, storage=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()
