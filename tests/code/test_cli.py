"""Every stage's CLI: options and defaults from MLproject, help text, and defaults that agree.

MLproject declares each entry point's parameters and defaults once; the CLIs read them from there
(``config.entry_point_parser``). These tests hold the other places a default appears (the stage
functions' signatures, ``GatePolicy``, ``Thresholds``) to MLproject.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect

import pytest

from steps import main as main_command
from steps.core import config
from steps.evaluation import gate
from steps.monitoring.decision import Thresholds
from steps.training import families, trainer

# Entry point -> (its command module, the library module and stage function the command calls).
STAGES = {
    "ingest": ("steps.ingest", "steps.data.ingestion", "ingest"),
    "split": ("steps.split", "steps.data.splitting", "split"),
    "train": ("steps.train", "steps.training.trainer", "train"),
    "register": ("steps.register", "steps.registry.registration", "register"),
    "monitor": ("steps.monitor", "steps.monitoring.assess", "monitor"),
    "deploy": ("steps.deploy", "steps.deployment.rollout", "deploy"),
    "simulate": ("steps.simulate", "steps.orchestration.simulation", "simulate"),
    "main": ("steps.main", "steps.orchestration.pipeline", "run_pipeline"),
}
REQUIRED = {"monitor": ["--batch-uri", "batch.csv"]}


def _parser(entry_point: str):
    module = importlib.import_module(STAGES[entry_point][0])
    return config.entry_point_parser(entry_point, module.__doc__, module.HELP)


def _comparable(value: object) -> object:
    """Defaults as MLproject writes them: sequences comma-joined, None as the empty string,
    booleans as ``true``/``false``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list):
        return ",".join(value)
    return "" if value is None else value


def test_mlproject_lists_every_entry_point_with_a_cli():
    assert set(STAGES) | {"rollback"} == set(
        __import__("yaml").safe_load((config.PROJECT_ROOT / "MLproject").read_text())[
            "entry_points"
        ]
    )


@pytest.mark.parametrize("entry_point", sorted(STAGES))
def test_cli_options_and_defaults_are_mlprojects(entry_point):
    declared = config.project_defaults(entry_point)
    parser = _parser(entry_point)
    options = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert set(options) == set(declared)
    assert all(action.help and action.help.strip() for action in options.values())
    parsed = vars(parser.parse_args(REQUIRED.get(entry_point, [])))
    for name, default in declared.items():
        if default is not None:
            assert _comparable(parsed[name]) == default, name


@pytest.mark.parametrize("entry_point", sorted(STAGES))
def test_help_is_readable(entry_point, capsys):
    module = importlib.import_module(STAGES[entry_point][0])
    with pytest.raises(SystemExit) as exited:
        module.main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: python -m steps.{entry_point}")
    for name in config.project_defaults(entry_point):
        assert f"--{name.replace('_', '-')}" in text


@pytest.mark.parametrize("entry_point", sorted(STAGES))
def test_stage_function_defaults_agree_with_mlproject(entry_point):
    _, module_name, function_name = STAGES[entry_point]
    function = getattr(importlib.import_module(module_name), function_name)
    declared = config.project_defaults(entry_point)
    for name, parameter in inspect.signature(function).parameters.items():
        if name in declared and parameter.default is not inspect.Parameter.empty:
            default = parameter.default
            if name == "families" and default == "":  # read from MLproject when called
                default = config.default_families()
            assert _comparable(default) == declared[name], f"{function_name}({name})"


def test_gate_policy_and_thresholds_agree_with_mlproject():
    register_defaults = config.project_defaults("register")
    for field in dataclasses.fields(gate.GatePolicy):
        if field.name in register_defaults:
            assert field.default == register_defaults[field.name], field.name
    monitor_defaults = config.project_defaults("monitor")
    thresholds = Thresholds.defaults().as_dict()
    assert set(thresholds) <= set(monitor_defaults)
    assert thresholds == {name: monitor_defaults[name] for name in thresholds}
    assert monitor_defaults["model_uri"] == config.CHAMPION_MODEL_URI
    assert monitor_defaults["experiment"] == config.MONITORING_EXPERIMENT


def test_the_monitoring_dag_passes_every_monitor_threshold():
    """Read from the DAG file's syntax: the pytest process never imports Airflow."""
    source = (config.PROJECT_ROOT / "dags" / "monitoring_retraining_dag.py").read_text()
    (listed,) = [
        ast.literal_eval(node.value)
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        and getattr(node.targets[0], "id", "") == "MONITOR_THRESHOLDS"
    ]
    assert sorted(listed) == sorted(Thresholds.__dataclass_fields__)


def test_train_without_arguments_gets_usable_defaults():
    """``python -m steps.train`` with no arguments used to fail: unknown model families []."""
    parsed = _parser("train").parse_args([])
    assert set(families.parse_families(parsed.families)) <= set(families.FAMILIES)
    assert set(vars(parsed)) <= set(inspect.signature(trainer.train).parameters)


def test_a_fractional_count_is_refused(capsys):
    with pytest.raises(SystemExit):
        main_command.main(["--trials-per-family", "2.5"])
    assert "expected a whole number" in capsys.readouterr().err


def test_every_entry_point_trains_the_same_default_families():
    """One default family list (MLproject's ``train``; main and simulate alias it)."""
    lists = {
        entry_point: config.project_defaults(entry_point).get("families") for entry_point in STAGES
    }
    declared = {families for families in lists.values() if families is not None}
    assert declared == {config.project_defaults("train")["families"]}, lists
