# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Health Predict: exploratory analysis and a logistic-regression baseline
#
# The first 20% of encounters (file order) of the UCI "Diabetes 130-US hospitals" data, as the
# initial model sees them. Runs top to bottom as a script (CI does); figures go to
# `HEALTH_PREDICT_NOTEBOOK_OUTPUT` (default `build/notebooks`). Death/hospice encounters are
# excluded from the label, as in training.

# %%
import io
import os
import sys
import zipfile
from pathlib import Path

# The project root (the folder holding MLproject) makes `custom_pyfunc` and `steps` importable
# from Jupyter (cwd notebooks/) and from a script run anywhere inside the project.
PROJECT_ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "MLproject").exists())
sys.path.insert(0, str(PROJECT_ROOT))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import GroupShuffleSplit

from custom_pyfunc import columns, features
from custom_pyfunc.preprocessing import FeatureEncoder
from steps.core import config

OUTPUT = Path(os.environ.get("HEALTH_PREDICT_NOTEBOOK_OUTPUT", PROJECT_ROOT / "build/notebooks"))
OUTPUT.mkdir(parents=True, exist_ok=True)

# %% Load the raw table (zip or CSV) and keep the initial 20%
source = config.raw_data_source()
if source.endswith(".zip"):
    with zipfile.ZipFile(source) as archive:
        member = next(n for n in archive.namelist() if n.endswith(config.RAW_CSV_NAME))
        raw = columns.read_encounters_csv(io.BytesIO(archive.read(member)))
else:
    raw = columns.read_encounters_csv(source)
initial = raw.iloc[: int(len(raw) * 0.2)]
eligible = initial[columns.is_label_eligible(initial).to_numpy()]
labels = columns.make_label(eligible).to_numpy()
print(f"{len(initial)} initial encounters, {len(eligible)} label-eligible, "
      f"30-day readmission rate {labels.mean():.3f}")  # fmt: skip

# %% Missing values per column
missing_share = initial.isna().mean().sort_values(ascending=False)
figure, axis = plt.subplots(figsize=(7, 4))
missing_share[missing_share > 0].plot.bar(ax=axis)
axis.set(ylabel="share missing", title="Missing values (weight is almost always missing)")
figure.tight_layout()
figure.savefig(OUTPUT / "missing_share.png", dpi=80)
print(missing_share.head(8).round(3).to_string())

# %% Readmission rate by prior inpatient visits and by age
engineered = features.engineer_features(features.clean_data(eligible))
by_inpatient = pd.Series(labels).groupby(np.minimum(engineered["number_inpatient"], 5)).mean()
by_age = pd.Series(labels).groupby(engineered["age_ordinal"].to_numpy()).mean()
figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
by_inpatient.plot.bar(ax=left, title="by prior inpatient visits (5 = 5+)")
by_age.plot.bar(ax=right, title="by age bracket (0 = [0-10))")
for axis in (left, right):
    axis.set_ylabel("30-day readmission rate")
figure.tight_layout()
figure.savefig(OUTPUT / "readmission_rates.png", dpi=80)

# %% Primary diagnosis groups (ICD-9 chapters)
print(pd.crosstab(engineered["diag_1_group"], labels, normalize="index").round(3).to_string())

# %% Logistic-regression baseline on a patient-grouped 80/20 split
splitter = GroupShuffleSplit(n_splits=1, test_size=0.2, random_state=42)
train_idx, test_idx = next(splitter.split(engineered, labels, groups=eligible["patient_nbr"]))
encoder = FeatureEncoder(encoding="onehot")
x_train = encoder.fit_transform(engineered.iloc[train_idx], labels[train_idx])
baseline = LogisticRegression(C=0.05, max_iter=2000).fit(x_train, labels[train_idx])
probability = baseline.predict_proba(encoder.transform(engineered.iloc[test_idx]))[:, 1]
roc_auc = roc_auc_score(labels[test_idx], probability)
pr_auc = average_precision_score(labels[test_idx], probability)
print(f"logistic regression baseline: ROC-AUC {roc_auc:.3f}, PR-AUC {pr_auc:.3f}")
assert roc_auc > 0.6, "the baseline should beat chance clearly"
