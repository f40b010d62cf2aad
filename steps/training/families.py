"""The model families: their search spaces, estimators and encodings."""

from __future__ import annotations

from typing import Any

from custom_pyfunc import features
from custom_pyfunc.preprocessing import categorical_indices

FAMILIES = ("logreg", "random_forest", "xgboost", "lightgbm", "catboost")


ENCODING = {
    "logreg": "onehot",
    "random_forest": "ordinal",
    "xgboost": "ordinal",
    "lightgbm": "ordinal",
    "catboost": "native",
}


# CatBoost trials stop when validation ROC-AUC has not improved for this many trees; the refit
# uses the number of trees the best trial found.
CATBOOST_MAX_TREES, CATBOOST_PATIENCE = 2000, 50


def search_space(family: str) -> dict[str, Any]:
    """Ray Tune search space of one family's hyperparameters."""
    # lazy: ray.tune takes ~6 s to import; a refit (benchmarks/replay.py) needs none of it
    from ray import tune

    spaces = {
        "logreg": {
            "C": tune.loguniform(1e-3, 1.0),
            "class_weight": tune.choice(["none", "balanced"]),
        },
        "random_forest": {
            "n_estimators": tune.randint(200, 500),
            "max_depth": tune.randint(6, 20),
            "min_samples_leaf": tune.randint(5, 100),
            "max_features": tune.uniform(0.1, 0.5),
            "class_weight": tune.choice(["none", "balanced_subsample"]),
        },
        "xgboost": {
            "n_estimators": tune.randint(200, 800),
            "learning_rate": tune.loguniform(0.01, 0.1),
            "max_depth": tune.randint(2, 7),
            "min_child_weight": tune.loguniform(1.0, 50.0),
            "subsample": tune.uniform(0.5, 1.0),
            "colsample_bytree": tune.uniform(0.3, 0.9),
            "reg_lambda": tune.loguniform(0.1, 50.0),
        },
        "lightgbm": {
            "n_estimators": tune.randint(200, 800),
            "learning_rate": tune.loguniform(0.005, 0.05),
            "num_leaves": tune.randint(4, 32),
            "min_child_samples": tune.randint(20, 300),
            "subsample": tune.uniform(0.5, 1.0),
            "colsample_bytree": tune.uniform(0.2, 0.8),
            "reg_lambda": tune.loguniform(0.1, 50.0),
            "cat_smooth": tune.uniform(5.0, 50.0),
            "min_data_per_group": tune.randint(20, 200),
        },
        "catboost": {
            "learning_rate": tune.loguniform(0.03, 0.1),
            "depth": tune.randint(4, 9),
            "l2_leaf_reg": tune.loguniform(1.0, 20.0),
        },
    }
    return spaces[family]


def build_estimator(family: str, params: dict[str, Any], seed: int, n_jobs: int):
    """An unfitted classifier of ``family`` with hyperparameters ``params``."""
    params = {k: (None if v == "none" else v) for k, v in params.items()}
    if family == "logreg":
        # lazy: each family's library takes 4-10 s to import; only the families searched are loaded
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=2000, random_state=seed, **params)
    if family == "random_forest":
        # lazy: each family's library takes 4-10 s to import; only the families searched are loaded
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(random_state=seed, n_jobs=n_jobs, **params)
    if family == "xgboost":
        # lazy: each family's library takes 4-10 s to import; only the families searched are loaded
        from xgboost import XGBClassifier

        return XGBClassifier(tree_method="hist", random_state=seed, n_jobs=n_jobs, **params)
    if family == "lightgbm":
        # lazy: each family's library takes 4-10 s to import; only the families searched are loaded
        from lightgbm import LGBMClassifier

        return LGBMClassifier(
            subsample_freq=1, random_state=seed, n_jobs=n_jobs, verbose=-1, **params
        )
    if family == "catboost":
        # lazy: each family's library takes 4-10 s to import; only the families searched are loaded
        from catboost import CatBoostClassifier

        return CatBoostClassifier(
            **{"n_estimators": CATBOOST_MAX_TREES, **params},
            cat_features=list(features.FEATURE_CATEGORICAL_COLUMNS),
            eval_metric="AUC",
            random_seed=seed,
            thread_count=n_jobs,
            allow_writing_files=False,
            verbose=0,
        )
    raise ValueError(f"unknown model family {family!r}: choose from {', '.join(FAMILIES)}")


def fit_params(family: str, prefix: str = "") -> dict[str, Any]:
    """Extra ``fit`` arguments: LightGBM is told which columns hold category codes."""
    return {f"{prefix}categorical_feature": categorical_indices()} if family == "lightgbm" else {}


def parse_families(families: str | list[str]) -> list[str]:
    """The family names of a comma-separated string or list; unknown or none is a ValueError."""
    family_list = families.split(",") if isinstance(families, str) else list(families)
    family_list = [f.strip() for f in family_list if f.strip()]
    unknown = sorted(set(family_list) - set(FAMILIES))
    if unknown or not family_list:
        raise ValueError(f"unknown model families {unknown}: choose from {', '.join(FAMILIES)}")
    return family_list
