"""The model card: a markdown page a reviewer can audit a registered version from.

It is built from facts gathered by ``steps.register`` (the training run, the data hashes, the gate's
evaluation) and rendered twice: in full as a run artifact, and compact (no long tables, within the
registry's 5,000-character description limit) as the model version's description.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from custom_pyfunc import reasons
from steps.evaluation.gate import GateDecision, Interval

DESCRIPTION_LIMIT = 5000  # characters the registry stores in a version description

INTENDED_USE = """\
- Decision support for care-transition teams: rank adult diabetic inpatients at discharge by their
  risk of readmission within 30 days, so that follow-up calls, medication reconciliation or early
  clinic visits go to those most likely to benefit.
- A clinician reviews every flag; the score adds to clinical judgement, it does not replace it.
- Hospitals whose population, coding (ICD-9-CM diagnoses) and record fields resemble the training
  data; check performance on local labelled data before relying on it."""

NOT_INTENDED_USE = """\
- Denying, delaying or rationing care, or any insurance, coverage or billing decision.
- Diagnosis or treatment choice for an individual patient.
- Automated action without clinician review.
- Children and non-diabetic patients, encounters coded in ICD-10, or health systems unlike the
  130 US hospitals of 1999-2008 without local re-validation.
- Patients discharged to hospice or who died: excluded from the label and the evaluation."""

DATASET_LIMITATIONS = """\
- Old and US-only: encounters from 130 US hospitals, 1999-2008; care practice, coding (ICD-9) and
  populations have changed since, so drift is expected and monitored.
- Readmissions are only seen when they return to a hospital of the same network; readmissions
  elsewhere count as negatives (label noise towards "not readmitted").
- Sparse fields: `weight` is missing for about 97% of encounters, `medical_specialty` for about
  half; `race` for about 2%. `payer_code` is missing in 100% of the initial 20% (train, validation,
  test) and in 24.5% of the later encounters (46%, 30%, 10%, 12% by quarter of `future_data`):
  a record-keeping change, not a patient property. A model trained on the initial data cannot use
  it (constant); it is kept as an input because retrained models may, and it is documented as a
  shift proxy: its drift says the records changed, and on `future_data` the 30-day readmission rate
  is 11.8% with it missing vs 11.2% with it present.
- Small subgroups (e.g. race Asian/Other, ages under 40) give noisy recall and AUC; the gate only
  judges subgroups with enough positive cases.
- Several encounters per patient: the splits keep each patient in one of train/validation/test.
- Imbalanced label: about 11% of encounters are readmitted within 30 days.
- No vital signs, lab values beyond A1C and glucose flags, or social determinants of health, which
  bounds achievable discrimination (published leakage-free ROC-AUC is about 0.66-0.68)."""


@dataclass(frozen=True)
class DataFile:
    """A dataset the model was trained or tuned on."""

    name: str
    sha256: str
    rows: int | None


@dataclass(frozen=True)
class EvaluationSummary:
    """The labelled data the gate judged on."""

    uris: list[str]
    sha256: str
    rows: int
    excluded_rows: int
    positives: int
    target: str
    patient_overlap_rows: int = 0  # rows dropped: their patient was in the training data
    patient_overlap_patients: int = 0


@dataclass(frozen=True)
class ModelCardFacts:
    """Everything the card states, gathered by ``steps.register``."""

    model_name: str
    version: str
    family: str
    source_run_id: str
    train_run_id: str
    source_params: dict[str, str]
    source_metrics: dict[str, float]
    training_data: list[DataFile]
    evaluation: EvaluationSummary
    decision: GateDecision
    champion_version: str | None
    metrics: dict[str, Interval]
    calibration: pd.DataFrame  # ``evaluate.calibration_table``; subgroups: ``decision.subgroups``
    expected_calibration_error: float
    registry_run_id: str


def _number(value: float | None, digits: int = 4) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _interval(interval: Interval | None, digits: int = 4) -> str:
    if interval is None:
        return "n/a"
    return (
        f"{_number(interval.estimate, digits)} "
        f"[{_number(interval.low, digits)}, {_number(interval.high, digits)}]"
    )


def _markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a markdown table (pandas' ``to_markdown``): floats to 3 places, gaps "n/a"."""
    cells = frame.astype(object).where(frame.notna(), None)
    return cells.to_markdown(index=False, floatfmt=".3f", missingval="n/a")


def _threshold_section(facts: ModelCardFacts) -> str:
    params = facts.source_params
    threshold = params.get("threshold", "not recorded")
    rule = params.get("threshold_rule") or (
        "chosen on the validation split by the training step (see the source run's parameters)"
    )
    positive_rate = facts.metrics.get("positive_rate")
    precision = facts.metrics.get("precision")
    prevalence = facts.evaluation.positives / facts.evaluation.rows if facts.evaluation.rows else 0
    lift = precision.estimate / prevalence if precision is not None and prevalence else None
    source = facts.source_metrics
    return (
        f"`prediction` is 1 when `probability_score` >= **{threshold}**; rule: {rule}. "
        f"On the evaluation data this flags {_interval(positive_rate, 3)} of encounters with "
        f"precision {_interval(precision, 3)}, recall {_interval(facts.metrics.get('recall'), 3)} "
        f"and lift {_number(lift, 2)} (precision / readmission rate); on initial_test it "
        f"flagged {_number(source.get('test_flag_rate'), 3)} with precision "
        f"{_number(source.get('test_precision'), 3)}, recall "
        f"{_number(source.get('test_recall'), 3)}, lift {_number(source.get('test_lift'), 2)}. "
        f"Alternative, reported only: the max-F1 "
        f"threshold {_number(source.get('maxf1_threshold'))} would flag "
        f"{_number(source.get('test_maxf1_flag_rate'), 3)} of initial_test at precision "
        f"{_number(source.get('test_maxf1_precision'), 3)}, recall "
        f"{_number(source.get('test_maxf1_recall'), 3)}."
    )


def _baseline_section(facts: ModelCardFacts) -> str:
    """This model against the fair fixed-setting baselines on initial_test (training run)."""
    source = facts.source_metrics
    difference = source.get("test_minus_best_baseline_roc_auc")
    if difference is None:
        return "Not recorded by the training run."
    interval = Interval(
        difference,
        source.get("test_minus_best_baseline_roc_auc_ci_low", float("nan")),
        source.get("test_minus_best_baseline_roc_auc_ci_high", float("nan")),
    )
    return (
        "Fixed, untuned baselines on the same training rows (steps/evaluation/baselines.py): "
        f"one-hot logistic regression ROC-AUC "
        f"{_number(source.get('test_onehot_logreg_roc_auc'))}, one-hot XGBoost (learning rate "
        f"0.05, depth 4, 300 trees) {_number(source.get('test_onehot_xgboost_roc_auc'))} on "
        f"initial_test; this model {_number(source.get('test_roc_auc'))}. This model minus the "
        f"best baseline ({facts.source_params.get('best_baseline', 'n/a')}): "
        f"**{_interval(interval)}** (paired bootstrap 95%). The same comparison on future_data: "
        "`python -m benchmarks.training`."
    )


def _calibration_summary(facts: ModelCardFacts) -> str:
    method = facts.source_params.get("calibration") or facts.source_params.get(
        "calibration_method", "see the source run's parameters"
    )
    brier = facts.metrics.get("brier")
    return (
        f"Calibration method: {method}. On the evaluation data: Brier score "
        f"{_interval(brier)}, expected calibration error (10 quantile bins) "
        f"{_number(facts.expected_calibration_error)}; training run reports test Brier "
        f"{_number(facts.source_metrics.get('test_brier'))}, test ECE "
        f"{_number(facts.source_metrics.get('test_ece'))}, calibration slope "
        f"{_number(facts.source_metrics.get('test_calibration_slope'), 3)} and intercept "
        f"{_number(facts.source_metrics.get('test_calibration_intercept'), 3)} (ideal 1 and 0; "
        "per subgroup in the subgroup table)."
    )


def _reasons_section(facts: ModelCardFacts, compact: bool) -> str:
    """What drives the score overall: mean absolute contribution per input column on the test
    split, from the source run's metrics (families that serve reasons only)."""
    prefix = reasons.GLOBAL_METRIC_PREFIX
    means = {
        k.removeprefix(prefix): v for k, v in facts.source_metrics.items() if k.startswith(prefix)
    }
    if not means:
        return f"A {facts.family} model serves no per-prediction reasons (see docs/reasons.md)."
    ranked = sorted(means.items(), key=lambda item: item[1], reverse=True)
    table = pd.DataFrame(
        ranked[: 5 if compact else 15], columns=["input column", "mean absolute contribution"]
    )
    return (
        "Mean absolute contribution to the log-odds (before calibration) per input column on the "
        f"test split; the served answer gives each encounter's own with `params.reasons` "
        f"(docs/reasons.md). Top {len(table)} of {len(ranked)}:\n\n" + _markdown_table(table)
    )


def _header(facts: ModelCardFacts, compact: bool, card_uri: str | None) -> list[str]:
    """Title, model identity, gate verdict, intended and not intended uses, training data."""
    decision = facts.decision
    verdict = "promoted to champion" if decision.promote else "not promoted"
    champion = f"version {facts.champion_version}" if facts.champion_version else "none"
    lines = [
        f"# Model card: {facts.model_name} version {facts.version}",
        "",
        f"30-day readmission risk for diabetic inpatients. Family **{facts.family}**, source run "
        f"`{facts.source_run_id}`, training run `{facts.train_run_id}`, registry decision run "
        f"`{facts.registry_run_id}`.",
        "",
        f"**Gate decision: {verdict}** (compared with champion {champion}). {decision.reason}.",
    ]
    if compact and card_uri:
        lines += ["", f"Full card with subgroup and calibration tables: `{card_uri}`"]
    data = pd.DataFrame(
        [(f.name, f.sha256, f.rows if f.rows is not None else "n/a") for f in facts.training_data],
        columns=["file", "sha256", "rows"],
    )
    return [
        *lines,
        "",
        "## Intended use",
        INTENDED_USE,
        "",
        "## Not intended for",
        NOT_INTENDED_USE,
        "",
        "## Training data",
        "UCI Diabetes 130-US hospitals 1999-2008 (CC BY 4.0): the first 20% of encounters in file "
        "order, split by patient into train/validation/test.",
        "",
        _markdown_table(data) if len(data) else "No data hashes recorded on the source run.",
    ]


def _metrics_table(facts: ModelCardFacts) -> str:
    """Each metric on the evaluation data (with its interval) and on the training run."""
    source = facts.source_metrics
    rows = [
        (
            "ROC-AUC",
            _interval(facts.decision.comparison.challenger),
            f"{_number(source.get('val_roc_auc'))} / {_number(source.get('test_roc_auc'))}",
        ),
        (
            "PR-AUC",
            _interval(facts.metrics.get("pr_auc")),
            f"{_number(source.get('val_pr_auc'))} / {_number(source.get('test_pr_auc'))}",
        ),
        *(
            (
                name,
                _interval(facts.metrics.get(name)),
                f"n/a / {_number(source.get(f'test_{name}'))}",
            )
            for name in ("recall", "precision", "f1", "brier")
        ),
    ]
    columns = ["metric", "evaluation data", "training run (validation / test)"]
    return _markdown_table(pd.DataFrame(rows, columns=columns))


def _evaluation(facts: ModelCardFacts) -> list[str]:
    """Evaluation data, metrics, champion comparison and the subgroup recall gap."""
    decision, evaluation = facts.decision, facts.evaluation
    comparison = decision.comparison
    return [
        "",
        "## Evaluation data",
        f"{', '.join(f'`{u}`' for u in evaluation.uris)} (sha256 `{evaluation.sha256}`): "
        f"{evaluation.rows} encounters judged, {evaluation.excluded_rows} excluded (death or "
        f"hospice), {evaluation.positives} positives (target `{evaluation.target}`); "
        f"{evaluation.patient_overlap_rows} rows of {evaluation.patient_overlap_patients} "
        "patients also in the training data were left out (patient-disjoint evaluation).",
        "",
        f"## Metrics ({comparison.confidence:.0%} paired-bootstrap intervals, "
        f"{comparison.n_resamples} resamples)",
        "",
        _metrics_table(facts),
        "",
        "## Champion comparison",
        f"Champion ROC-AUC {_interval(comparison.champion)}; difference (challenger - champion) "
        f"{_interval(comparison.difference)}; non-inferiority margin "
        f"{decision.policy.margin:.4f}; ROC-AUC floor {decision.policy.auc_floor:.4f}.",
        "",
        "## Subgroups",
        f"Recall gap = overall recall ({decision.overall_recall:.3f}) minus the lowest recall "
        f"among race, gender and age-group subgroups with >= "
        f"{decision.policy.min_subgroup_positives} positives: "
        f"**{decision.subgroup_recall_gap:.3f}** (worst: "
        f"{decision.worst_subgroup or 'none judged'}; allowed "
        f"{decision.policy.max_subgroup_recall_gap:.3f}).",
    ]


def render(facts: ModelCardFacts, compact: bool = False, card_uri: str | None = None) -> str:
    """The card as markdown; ``compact`` leaves out the long tables and points to the full card."""
    lines = _header(facts, compact, card_uri) + _evaluation(facts)
    if not compact:
        lines += ["", _markdown_table(facts.decision.subgroups)]
    lines += ["", "## Fair baselines", _baseline_section(facts)]
    lines += ["", "## Operating point (alert budget)", _threshold_section(facts), ""]
    lines += ["## Calibration", _calibration_summary(facts)]
    if not compact:
        lines += ["", _markdown_table(facts.calibration)]
    lines += ["", "## What drives the score", _reasons_section(facts, compact)]
    lines += ["", "## Known limitations of the dataset", DATASET_LIMITATIONS, ""]
    return "\n".join(lines)


def registry_description(facts: ModelCardFacts, card_uri: str) -> str:
    """The card for the version description: full if it fits the registry's limit, else compact."""
    full = render(facts)
    if len(full) <= DESCRIPTION_LIMIT:
        return full
    compact = render(facts, compact=True, card_uri=card_uri)
    if len(compact) <= DESCRIPTION_LIMIT:
        return compact
    suffix = f"\n\n(truncated; full card: `{card_uri}`)\n"
    return compact[: DESCRIPTION_LIMIT - len(suffix)] + suffix
