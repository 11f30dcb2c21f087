"""The `skillearn` command: sweep, report, retrain, export, compare and more (see `--help`).

Every user-fixable mistake ends as one line `skillearn: error: ...` on stderr and exit code 2,
before Ray or any trial starts. `sweep` exits 1 when every trial failed and 3 when MLflow writes
were left unsent (in the sweep's backlog, for `skillearn sync`): never 0 with nothing recorded.
Heavy imports (Ray, MLflow, torch) happen only in the subcommand that needs them, so
`skillearn skills` or a typo answers instantly.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from skillearn.errors import SkillearnError
from skillearn.platform.validate import UsageError

PROG = "skillearn"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as a UsageError (one line), not usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `skillearn` command (exposed for docs and tests)."""
    parser = _Parser(prog=PROG, description="Learning skills as Ray Tune sweeps tracked in MLflow.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_sweep(sub)
    sync = sub.add_parser("sync", help="send the MLflow writes a sweep could not (its backlog)")
    sync.add_argument("sweep_dir", help="the sweep's directory (STORAGE/NAME)")
    _tracking_args(sync)
    report = sub.add_parser("report", help="best trials from MLflow as a table")
    _tracking_args(report)
    _experiment_arg(report)
    report.add_argument("--top", type=int, default=10, help="rows to show (default 10)")
    ui = sub.add_parser("ui", help="open the MLflow UI on the tracking store")
    _tracking_args(ui)
    _experiment_arg(ui, help="the experiment its link opens")
    ui.add_argument("--port", type=int, default=5000, help="default 5000")
    _add_dashboard(sub)
    _add_retrain(sub)
    _add_export(sub)
    _add_compare(sub)
    sub.add_parser("skills", help="list the skills")
    sub.add_parser("datasets", help="list the datasets")
    return parser


# The knobs `sweep` has a named flag for (any other knob: --set or --config). Each flag's type,
# choices and help are its knob's (`knob_flag`); `_cmd_sweep` passes them on by these names.
SWEEP_DATA_KNOBS = ("dataset", "data_root", "download", "noise_rate", "noise_type", "imbalance")
SWEEP_TRIAL_KNOBS = ("epochs", "seed", "method", "backbone", "retrain_epochs")


def flag_knob(name: str) -> Any:
    """The knob a named flag stands for: a common knob, or one every skill of a kind has
    (`backbone`: the NAS skills)."""
    from skillearn.trainables.common import COMMON_KNOBS, KIND_KNOBS

    return COMMON_KNOBS.get(name) or next(k[name] for k in KIND_KNOBS.values() if name in k)


def knob_flag(parser: Any, name: str, flag: str | None = None, help: str | None = None) -> None:
    """Add `--flag` (default: the knob's name with dashes) for the common knob `name`, typed as
    its default, with its choices and (unless `help` says what the flag does differently) its
    help, so a knob declared once reads the same on the command line.

    The flag's default is None (not the knob's): an unset flag leaves the skill's own default.
    """
    knob = flag_knob(name)
    options: dict[str, Any] = {"dest": name, "help": knob.help if help is None else help}
    if isinstance(knob.default, bool):
        options.update(action="store_true", default=None)
    else:
        options["type"] = type(knob.default)
        if knob.choices is not None:
            options["choices"] = knob.choices
    parser.add_argument(flag or "--" + name.replace("_", "-"), **options)


def _add_sweep(sub: Any) -> None:
    from skillearn.platform.validate import SweepRequest

    sweep = sub.add_parser("sweep", help="run (or --resume) a hyperparameter sweep of a skill")
    sweep.add_argument("skill", help="skill to sweep (see `skillearn skills`)")
    data = sweep.add_argument_group("data")
    for name in SWEEP_DATA_KNOBS:
        knob_flag(data, name)
    run = sweep.add_argument_group("trials")
    run.add_argument("--samples", type=int, default=SweepRequest.samples,
                     help=f"number of trials (default {SweepRequest.samples})")
    for name in SWEEP_TRIAL_KNOBS:
        knob_flag(run, name)
    run.add_argument("--seeds", type=int, nargs="+", metavar="S",
                     help="no search: one trial per seed with the given settings (tuned knobs "
                     "at their defaults unless --set), for comparisons over seeds")
    run.add_argument("--config", metavar="SPEC.yaml",
                     help="knob settings as a YAML mapping (flags and --set override it)")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="any other knob; pinning a tuned knob removes it from the search")
    run.add_argument("--no-asha", dest="asha", action="store_false",
                     help="run every trial to the end (no early stopping)")
    place = sweep.add_argument_group("where")
    place.add_argument("--concurrency", type=int,
                       help="trials at once (default: CPUs // --cpus-per-trial)")
    place.add_argument("--cpus-per-trial", type=float, default=SweepRequest.cpus_per_trial,
                       help=f"default {SweepRequest.cpus_per_trial:g}")
    place.add_argument("--gpus-per-trial", type=float, default=SweepRequest.gpus_per_trial,
                       help="GPUs per trial, fractions share a GPU "
                       f"(default {SweepRequest.gpus_per_trial:g})")
    place.add_argument("--trial-resource", dest="trial_resources", action="append", default=[],
                       metavar="NAME=AMOUNT", help="a custom Ray resource per trial, e.g. "
                       "accel=1 (the workers of clusters/*.yaml declare accel)")
    place.add_argument("--address", help="Ray cluster: ray://host:10001, host:6379 or auto "
                       "(default: a local Ray)")
    place.add_argument("--storage", help="directory of sweep results (default ./skillearn_runs)")
    place.add_argument("--name", help="sweep name (default SKILL-DATASET-TIMESTAMP)")
    place.add_argument("--resume", action="store_true",
                       help="continue the sweep --name (default: the latest of SKILL/DATASET); "
                       "its original settings are used")
    _tracking_args(place)
    _experiment_arg(place)
    place.add_argument("--optuna-storage", help="database of the Optuna study (TPE history), "
                       "e.g. postgresql://user:pass@host/db?options=-csearch_path%%3Doptuna "
                       "(default: STORAGE/NAME/optuna.db)")


def _add_dashboard(sub: Any) -> None:
    dash = sub.add_parser("dashboard", help="open optuna-dashboard on a sweep's Optuna study "
                          "(history, parameter importances)")
    dash.add_argument("sweep", help="the sweep: its folder STORAGE/NAME, or NAME")
    dash.add_argument("--storage", help="where to look for NAME (default ./skillearn_runs)")
    dash.add_argument("--optuna-storage", help="the study's database, when not the one the "
                      "sweep recorded (passwords as ${VAR})")
    dash.add_argument("--port", type=int, default=8080, help="default 8080")


# The knobs `retrain` has a flag for (the trial's values, overridden): `_cmd_retrain` reads them.
RETRAIN_KNOBS = ("retrain_recipe", "dataset", "data_root", "retrain_channels", "retrain_cells")


def _add_retrain(sub: Any) -> None:
    retrain = sub.add_parser("retrain", help="retrain a searched architecture from scratch "
                             "with several seeds (search -> derive -> retrain)")
    source = retrain.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-id", help="MLflow run of a trial (see `skillearn report`)")
    source.add_argument("--genotype", help="genotype JSON file")
    retrain.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                         help="retraining seeds (default 0 1 2)")
    knob_flag(retrain, "retrain_recipe", "--recipe")
    retrain.add_argument("--epochs", type=int,
                         help="default: the recipe's (darts 600, fast 30)")
    knob_flag(retrain, "dataset", help="default: the trial's dataset (digits for a file)")
    knob_flag(retrain, "data_root")
    knob_flag(retrain, "retrain_channels", "--channels")
    knob_flag(retrain, "retrain_cells", "--cells")
    _tracking_args(retrain)
    _experiment_arg(retrain)


def _add_export(sub: Any) -> None:
    export = sub.add_parser("export", help="write a retrained network as a standalone "
                            "PyTorch module + weights (+ ONNX when onnx is installed)")
    export.add_argument("--run-id", required=True, help="a retrain run (`skillearn retrain`), "
                        "or a trial run: its latest retrain run")
    export.add_argument("--out", help="output folder (default ./export-RUN_ID)")
    export.add_argument("--seed", type=int, help="whose weights, of the retrain run's seeds "
                        "(default: its first)")
    _tracking_args(export)


def _add_compare(sub: Any) -> None:
    comp = sub.add_parser("compare", help="skills side by side: mean ± std over seeds "
                          "(table and bar chart)")
    comp.add_argument("skills", nargs="*", help="skills to compare (default: all logged)")
    knob_flag(comp, "dataset", help="only trials on this dataset")
    knob_flag(comp, "noise_rate", help="only trials with this noise rate")
    knob_flag(comp, "noise_type", help="only trials with this label-noise model")
    knob_flag(comp, "imbalance", help="only trials with this imbalance factor")
    comp.add_argument("--baseline", metavar="SKILL", help="skill the others are tested "
                      "against (Welch's t-test, 95%% CI of the difference; default: ce, else "
                      "darts, else the first skill named or, with none named, logged)")
    comp.add_argument("--metric", default="test_acc", choices=COMPARED_METRICS,
                      help="metric of the test against the baseline (default test_acc)")
    comp.add_argument("--plot", default="compare.png", help="bar chart path (default "
                      "compare.png)")
    _tracking_args(comp)
    _experiment_arg(comp)


# the metrics `compare` tabulates (skillearn.platform.compare.COMPARED; repeated here so the
# parser needs no pandas import)
COMPARED_METRICS = ("test_acc", "worst_class_acc", "weight_auc", "retrain_test_acc")


def _tracking_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", help="MLflow store: sqlite:///<path>/mlflow.db or "
                        "http(s)://server (default sqlite:///./mlflow.db, absolute)")


def _experiment_arg(parser: Any, help: str = "MLflow experiment name") -> None:
    from skillearn.platform.validate import SweepRequest

    parser.add_argument("--experiment", default=SweepRequest.experiment, help=help)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from skillearn.platform.validate import SweepRequest, parse_sets, skill_named, validate_sweep

    skill = skill_named(args.skill)
    # precedence: the spec file, then --set, then the named flags
    overrides: dict[str, Any] = read_spec(args.config) if args.config else {}
    overrides.update(parse_sets(args.sets, skill))
    flags = {name: getattr(args, name) for name in (*SWEEP_DATA_KNOBS, *SWEEP_TRIAL_KNOBS)}
    overrides.update({k: v for k, v in flags.items() if v is not None})
    spec = validate_sweep(SweepRequest(
        skill=args.skill, overrides=overrides, samples=args.samples, storage=args.storage,
        name=args.name, tracking_uri=args.tracking_uri, experiment=args.experiment,
        address=args.address, resume=args.resume, concurrency=args.concurrency,
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, asha=args.asha,
        seeds=args.seeds, optuna_storage=args.optuna_storage,
        trial_resources=tuple(args.trial_resources),
    ))
    from skillearn.platform.dryrun import dry_run

    dry_run(spec)  # every trial's set-up, once, before Ray starts
    from skillearn.platform.sweep import run_sweep
    from skillearn.platform.tracking import unsent_writes

    best = run_sweep(spec)
    if unsent_writes(spec.path, spec.name):  # the tracker said how to send them
        return EXIT_UNSENT
    return 0 if best is not None else 1


EXIT_UNSENT = 3  # the sweep ran, but MLflow writes wait in its backlog (`skillearn sync`)


def _cmd_sync(args: argparse.Namespace) -> int:
    from skillearn.platform.sync import sync_sweep

    return sync_sweep(args.sweep_dir, args.tracking_uri)


def read_spec(path: str) -> dict[str, Any]:
    """A YAML experiment spec: a flat mapping of knob -> value (checked like --set)."""
    from pathlib import Path

    import yaml

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"--config {path}: no such file")
    if file.stat().st_size > MAX_SPEC_BYTES:
        raise UsageError(f"--config {path} is larger than {MAX_SPEC_BYTES // 1024} KiB; a spec "
                         "is a short mapping of knob names to values")
    try:
        spec = yaml.safe_load(file.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError as err:
        raise UsageError(f"--config {path} is not UTF-8 text ({err.reason} at byte "
                         f"{err.start})") from None
    except yaml.YAMLError as err:
        raise UsageError(f"--config {path} is not valid YAML: {err}") from None
    except RecursionError:
        raise UsageError(f"--config {path} is nested too deeply for a spec") from None
    if not isinstance(spec, dict) or not all(isinstance(k, str) for k in spec):
        raise UsageError(f"--config {path} must be a mapping of knob names to values")
    return spec


MAX_SPEC_BYTES = 64 * 1024


def _cmd_report(args: argparse.Namespace) -> int:
    from skillearn.platform.report import best_trials, format_table
    from skillearn.platform.validate import check_tracking_uri, default_tracking_uri

    uri = check_tracking_uri(args.tracking_uri or default_tracking_uri())
    print(format_table(best_trials(uri, args.experiment, args.top)))
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    from skillearn.platform.validate import check_tracking_uri, default_tracking_uri

    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    uri = check_tracking_uri(args.tracking_uri or default_tracking_uri())
    _check_port_free(args.port)
    import os

    from skillearn.platform.secrets import expand_secrets

    # The store goes in the environment, not on the command line: a ${VAR} password expanded
    # into argv would be visible to every user in `ps`.
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": expand_secrets(uri)}
    command = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1",
               "--port", str(args.port)]
    link = f"http://127.0.0.1:{args.port}/{_experiment_page(uri, args.experiment)}"
    print(f"MLflow UI on {link} (Ctrl-C to stop)", flush=True)
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0


MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def _experiment_page(uri: str, experiment: str) -> str:
    """The UI's page of `experiment`'s runs in MLflow 3's model-training view.

    MLflow 3.17 ignores the experiment's `mlflow.experimentKind` tag and opens every experiment
    in the browser's GenAI/Model-training mode (GenAI until switched at the top left); the
    link's `workflowType` chooses model training."""
    try:
        from mlflow.tracking import MlflowClient

        from skillearn.platform.secrets import expand_secrets

        found = MlflowClient(expand_secrets(uri)).get_experiment_by_name(experiment)
    except Exception:  # the link is a convenience: the UI starts anyway
        found = None
    if found is None:
        return f"#/experiments?{MODEL_TRAINING_VIEW}"
    return f"#/experiments/{found.experiment_id}/runs?{MODEL_TRAINING_VIEW}"


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from skillearn.platform.dashboard import locate_study, open_study_storage, serve_dashboard

    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    study = locate_study(args.sweep, args.storage, args.optuna_storage)
    storage = open_study_storage(study)
    _check_port_free(args.port)
    study_id = storage.get_study_id_from_name(study.name)
    print(f"Optuna dashboard of study {study.name!r} on "
          f"http://127.0.0.1:{args.port}/dashboard/studies/{study_id} (Ctrl-C to stop)",
          flush=True)
    try:
        serve_dashboard(storage, args.port)
    except KeyboardInterrupt:
        pass
    return 0


def _check_port_free(port: int) -> None:
    """The UI binds 127.0.0.1:port; a port in use would make it exit after we said it started."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as err:
            raise UsageError(
                f"cannot serve the UI on 127.0.0.1:{port} ({err.strerror or err}); another "
                "program uses it: stop it or pick another --port"
            ) from None


def _cmd_retrain(args: argparse.Namespace) -> int:
    from skillearn.platform.retrain_command import (
        genotype_from_run,
        log_retrain,
        retrain_seeds,
        retrain_settings,
        summarize,
    )
    from skillearn.platform.validate import check_tracking_uri, default_tracking_uri

    _check_retrain_epochs(args.epochs)
    _check_seeds(args.seeds)
    uri = check_tracking_uri(args.tracking_uri or default_tracking_uri())
    if args.run_id:
        genotype_json, params = genotype_from_run(uri, args.run_id)
        source = args.run_id
    else:
        (genotype_json, source), params = _read_genotype_file(args.genotype), {}
    _check_genotype(genotype_json, source)
    settings = retrain_settings(params, {name: getattr(args, name) for name in RETRAIN_KNOBS})
    _check_data_settings(settings)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="skillearn-weights-") as weights:
        rows = retrain_seeds(genotype_json, settings, args.seeds, args.epochs, Path(weights))
        summary = summarize(rows)
        run_id = log_retrain(uri, args.experiment, source, settings, genotype_json, rows,
                             summary, weights_dir=Path(weights))
    print(f"retrained test accuracy over {len(rows)} seeds: "
          f"{summary['retrain_test_acc_mean']:.4f} ± {summary['retrain_test_acc_std']:.4f} "
          f"(MLflow run {run_id})")
    return 0


def _read_genotype_file(name: str) -> tuple[str, str]:
    """The text of a genotype JSON file (checked to be one in `_check_genotype`) and its path."""
    from pathlib import Path

    path = Path(name)
    if not path.is_file():
        raise UsageError(f"genotype file {path} does not exist")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise UsageError(f"genotype file {path} is too large for a genotype")
    try:
        return path.read_bytes().decode("utf-8"), str(path)
    except UnicodeDecodeError:
        raise UsageError(f"genotype file {path} is not UTF-8 text") from None


def _check_retrain_epochs(epochs: int | None) -> None:
    """--epochs of `retrain`: at least 1, at most the `retrain_epochs` knob allows."""
    from skillearn.trainables.common import COMMON_KNOBS

    top = int(COMMON_KNOBS["retrain_epochs"].high or 0)
    if epochs is not None and not 1 <= epochs <= top:
        raise UsageError(f"--epochs must be between 1 and {top}, got {epochs}")


def _check_seeds(seeds: Sequence[int]) -> None:
    from skillearn.trainables.common import COMMON_KNOBS

    top = int(COMMON_KNOBS["seed"].high or 0)
    if any(not 0 <= s <= top for s in seeds) or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds needs distinct integers between 0 and {top}, got "
                         f"{list(seeds)[:10]}")


def _check_genotype(genotype_json: str, source: str) -> None:
    from skillearn.search_spaces.darts import parse_genotype

    try:
        parse_genotype(genotype_json)
    except ValueError as err:
        raise UsageError(f"{source} does not hold a valid genotype: {err}") from None


def _check_data_settings(settings: dict[str, Any]) -> None:
    """Bad data settings raise the data layer's DataError, which `main` reports like any
    SkillearnError."""
    from skillearn.data import check_data_spec, data_spec

    check_data_spec(data_spec(settings))


def _cmd_compare(args: argparse.Namespace) -> int:
    from skillearn.platform.compare import (
        compare,
        draw_comparison,
        format_comparison,
        trial_table,
    )
    from skillearn.platform.validate import check_tracking_uri, default_tracking_uri
    from skillearn.trainables.registry import available_skills

    named = [*args.skills, *([args.baseline] if args.baseline else [])]
    unknown = [s for s in named if s not in available_skills()]
    if unknown:
        raise UsageError(f"unknown skill(s) {', '.join(repr(s[:40]) for s in unknown)}; "
                         f"available: {', '.join(available_skills())}")
    uri = check_tracking_uri(args.tracking_uri or default_tracking_uri())
    table = compare(trial_table(uri, args.experiment), args.skills, baseline=args.baseline,
                    metric=args.metric, dataset=args.dataset, noise_rate=args.noise_rate,
                    noise_type=args.noise_type, imbalance=args.imbalance)
    missing = sorted(set(args.skills) - set(table["skill"] if not table.empty else []))
    if missing:  # asked for by name: say so rather than leave them out silently
        print(f"{PROG}: no finished trials of {', '.join(missing)} match", file=sys.stderr)
    print(format_comparison(table))
    if table.empty:
        return 1
    print(f"bar chart: {draw_comparison(table, args.plot)}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from skillearn.platform.export import check_out_dir, check_run_id, export_run
    from skillearn.platform.validate import check_tracking_uri, default_tracking_uri

    run_id = check_run_id(args.run_id)
    out = check_out_dir(args.out or f"export-{run_id}")
    uri = check_tracking_uri(args.tracking_uri or default_tracking_uri())
    info = export_run(uri, run_id, out, args.seed)
    print(f"exported run {info['retrain_run_id']} (seed {info['seed']}) to {out}: "
          f"{', '.join(info['files'])}; its logits match skillearn's network within "
          f"{info['max_logit_gap']:.1e}")
    if info["onnx"] != "written":
        print(f"ONNX {info['onnx']}")
    return 0


def _cmd_skills(args: argparse.Namespace) -> int:
    from skillearn.trainables.registry import available_skills, get_skill

    for name in available_skills():
        try:
            summary = get_skill(name).summary
        except Exception as err:  # one broken skill module must not hide the others
            summary = f"(cannot load: {err})"
        print(f"{name:12s} {summary}")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from skillearn.data.registry import LOADERS, available_datasets

    for name in available_datasets():
        print(f"{name:12s} {_first_line(LOADERS[name].__doc__)}")
    return 0


COMMANDS = {
    "sweep": _cmd_sweep,
    "sync": _cmd_sync,
    "report": _cmd_report,
    "ui": _cmd_ui,
    "dashboard": _cmd_dashboard,
    "retrain": _cmd_retrain,
    "compare": _cmd_compare,
    "export": _cmd_export,
    "skills": _cmd_skills,
    "datasets": _cmd_datasets,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `skillearn`; returns the exit code (2 for a bad request)."""
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if not _is_user_error(err):
            raise
        print(f"{PROG}: error: {one_line(err)}", file=sys.stderr)
        return 2


def _is_user_error(err: BaseException) -> bool:
    """Errors that come from what the user gave (arguments, files, stores), not from a bug:
    every SkillearnError, I/O and decoding errors, and MLflow refusing a request."""
    if isinstance(err, SkillearnError | OSError | UnicodeError | ValueError):
        return True
    return any((cls.__module__.startswith("mlflow.") and cls.__name__ == "MlflowException")
               or (cls.__module__ == "sqlalchemy.exc" and cls.__name__ == "DBAPIError")
               for cls in type(err).__mro__)


def one_line(err: BaseException, limit: int = 500) -> str:
    """The error as one line (credentials in URLs masked): its message, prefixed with what it
    is when that is not a SkillearnError (whose messages say it themselves)."""
    from skillearn.platform.redact import redact_text

    text = str(err)
    if not isinstance(err, SkillearnError):  # library messages: their first line says it
        text = next((line for line in text.splitlines() if line.strip()), "")
    if isinstance(err, OSError) and err.strerror:
        text = f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    if not isinstance(err, SkillearnError):
        text = f"{type(err).__name__}: {text}"
    text = redact_text(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


if __name__ == "__main__":
    raise SystemExit(main())
