"""What the served model needs installed: the complete, pinned list logged as its requirements.

Complete means an image can install it as it is (``pip install --no-deps``) and serve:
``steps/deployment/model_image.py`` does so for every model whose requirements name
``MLFLOW_DISTRIBUTION``; models logged before this list existed name full ``mlflow`` and only their
direct requirements, and get MLflow's own install steps.
"""

from __future__ import annotations

import io
import pickle
from importlib.metadata import packages_distributions, requires, version
from typing import TYPE_CHECKING

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if TYPE_CHECKING:
    from custom_pyfunc.predictor import ReadmissionPredictor

# MLflow's scoring server and pyfunc loading are in mlflow-skinny; full mlflow adds its tracking
# server's dependencies (about 800 MB of the serving image: pyarrow, matplotlib, sqlalchemy, ...).
MLFLOW_DISTRIBUTION = "mlflow-skinny"
# Distributions every model needs at serving time, pinned to the versions it was trained with;
# the fitted estimator's own library (lightgbm, xgboost, ...) is added per model.
SERVING_DISTRIBUTIONS = (MLFLOW_DISTRIBUTION, "pandas", "numpy", "scikit-learn", "joblib", "scipy")
# Declared dependencies serving never imports, left out of the model's requirements with all
# they alone pull in: CatBoost's plotting (plotly, matplotlib, graphviz: 140 MB, imported only by
# its plot functions), XGBoost's GPU collectives (nvidia-nccl-cu12: 490 MB, loaded only for
# multi-GPU training), the Databricks SDK's Google Cloud login (google-auth, with cryptography:
# 17 MB; the SDK itself stays, MLflow looks up modules in its namespace) and MLflow's record of a
# run's git commit (gitpython). The serving image's build runs the scoring server without them.
NOT_SERVED = frozenset(
    {"plotly", "matplotlib", "graphviz", "nvidia-nccl-cu12", "google-auth", "gitpython"}
)


class _ModuleRecorder(pickle.Pickler):
    """A pickler that notes the top-level module of every class and function it meets."""

    def __init__(self, file):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.modules: set[str] = set()

    def reducer_override(self, obj):
        owner = obj if isinstance(obj, type) else type(obj)
        self.modules.add((getattr(owner, "__module__", None) or "").split(".")[0])
        return NotImplemented


def pinned_requirements(predictor: ReadmissionPredictor) -> list[str]:
    """``name==version`` of everything serving ``predictor`` needs, as installed here:
    ``SERVING_DISTRIBUTIONS``, every distribution whose classes the fitted ``predictor`` holds (a
    LightGBM model needs lightgbm, not xgboost) and, recursively, what they require (markers
    evaluated here, extras not followed), except ``NOT_SERVED``. The list is complete, so an image
    can install it without resolving dependencies (``pip install --no-deps``)."""
    recorder = _ModuleRecorder(io.BytesIO())
    recorder.dump(predictor)
    owners = packages_distributions()
    used = {dist for module in recorder.modules for dist in owners.get(module, [])}
    wanted = [*SERVING_DISTRIBUTIONS, *sorted(used - set(SERVING_DISTRIBUTIONS))]
    names = list(dict.fromkeys(canonicalize_name(name) for name in wanted))
    for name in names:  # grows while walked: breadth first through the requirements
        for line in requires(name) or []:
            requirement = Requirement(line)
            dependency = canonicalize_name(requirement.name)
            applies = requirement.marker is None or requirement.marker.evaluate({"extra": ""})
            if applies and dependency not in NOT_SERVED and dependency not in names:
                names.append(dependency)
    return [f"{name}=={version(name)}" for name in names]


def is_complete(requirement_lines: list[str]) -> bool:
    """Whether a model's requirements (requirements.txt lines) are such a complete list: they
    name ``MLFLOW_DISTRIBUTION``."""
    names = set()
    for line in requirement_lines:
        if line.strip() and not line.lstrip().startswith(("#", "-")):
            names.add(canonicalize_name(Requirement(line.strip()).name))
    return MLFLOW_DISTRIBUTION in names
