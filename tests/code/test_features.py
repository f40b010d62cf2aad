"""Feature functions on synthetic encounters: single rows, unseen categories, no label, no ids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from custom_pyfunc import columns, features
from custom_pyfunc.preprocessing import FeatureEncoder
from tests.fixtures_data import synthetic_encounters


@pytest.fixture(scope="module")
def encounters() -> pd.DataFrame:
    return synthetic_encounters(400, seed=3)


def test_clean_data_drops_identifiers_and_label_and_keeps_the_contract_columns(encounters):
    cleaned = features.clean_data(encounters)
    assert list(cleaned.columns) == list(features.CLEAN_COLUMNS)
    assert not set(columns.ID_COLUMNS) & set(cleaned.columns)
    assert columns.LABEL_COLUMN not in cleaned.columns
    assert cleaned.index.equals(encounters.index)


def test_clean_data_normalises_missing_markers_weight_and_coded_ids():
    frame = synthetic_encounters(3, seed=1)
    frame = frame.astype(object)
    frame.loc[0, "race"] = "?"
    frame.loc[1, "race"] = ""
    frame.loc[0, "weight"] = "[50-75)"
    frame.loc[1, "weight"] = None
    frame.loc[2, "number_inpatient"] = None
    frame.loc[:, "admission_type_id"] = [1, 3, None]
    frame.loc[:, "A1Cresult"] = ["None", ">8", "Norm"]
    cleaned = features.clean_data(frame)
    assert cleaned.loc[0, "race"] is None and cleaned.loc[1, "race"] is None
    assert cleaned["weight_recorded"].tolist()[:2] == [1.0, 0.0]
    assert np.isnan(cleaned.loc[2, "number_inpatient"])
    assert cleaned["admission_type_id"].tolist() == ["1", "3", None]
    assert cleaned.loc[0, "A1Cresult"] == "None"  # "not measured" is a category, not missing


def test_icd9_groups_follow_the_clinical_ranges():
    codes = np.array(["250.83", "428", "486", "V57", "E909", "820", "715", "585", "153", None, "8"])
    expected = [
        "diabetes", "circulatory", "respiratory", "other", "other", "injury",
        "musculoskeletal", "genitourinary", "neoplasms", None, "other",
    ]  # fmt: skip
    assert features.icd9_group(codes).tolist() == expected


def test_engineered_features_on_a_single_row_without_label(encounters):
    row = encounters.drop(columns=[columns.LABEL_COLUMN, *columns.ID_COLUMNS]).iloc[[7]]
    engineered = features.engineer_features(features.clean_data(row))
    assert len(engineered) == 1
    expected = {*features.FEATURE_CATEGORICAL_COLUMNS, *features.FEATURE_NUMERIC_COLUMNS}
    assert set(engineered.columns) == expected
    visits = row[["number_outpatient", "number_emergency", "number_inpatient"]].sum(axis=1)
    assert engineered["total_prior_visits"].iloc[0] == visits.iloc[0]
    changed = row[list(columns.MEDICATION_COLUMNS)].isin(["Up", "Down"]).sum(axis=1).iloc[0]
    assert engineered["medications_changed"].iloc[0] == changed
    age_index = columns.AGE_BRACKETS.index(row["age"].iloc[0])
    assert engineered["age_ordinal"].iloc[0] == age_index


def test_features_are_row_independent(encounters):
    whole = features.engineer_features(features.clean_data(encounters))
    one_by_one = pd.concat(
        [features.engineer_features(features.clean_data(encounters.iloc[[i]])) for i in range(20)]
    )
    pd.testing.assert_frame_equal(whole.iloc[:20], one_by_one)


@pytest.mark.parametrize("encoding", ["ordinal", "onehot"])
def test_encoder_handles_unseen_categories_and_single_rows(encounters, encoding):
    engineered = features.engineer_features(features.clean_data(encounters))
    labels = columns.make_label(encounters).to_numpy()
    encoder = FeatureEncoder(encoding=encoding, min_frequency=5).fit(engineered, labels)
    unseen = encounters.iloc[[0]].copy()
    unseen[["medical_specialty", "diag_1", "payer_code"]] = ["Astrology", "999.99", "ZZ"]
    matrix = encoder.transform(features.engineer_features(features.clean_data(unseen)))
    assert matrix.shape == (1, len(encoder.get_feature_names_out()))
    assert np.isfinite(matrix[:, : len(features.FEATURE_NUMERIC_COLUMNS)]).all()
    known = encoder.transform(engineered.iloc[[0]])
    assert not np.array_equal(matrix, known)  # the unseen values map to the shared "other" code


def test_identifiers_never_reach_the_model(encounters):
    engineered = features.engineer_features(features.clean_data(encounters))
    labels = columns.make_label(encounters).to_numpy()
    encoder = FeatureEncoder().fit(engineered, labels)
    names = " ".join(encoder.get_feature_names_out())
    for identifier in columns.ID_COLUMNS:
        assert identifier not in names
    shuffled = encounters.copy()
    shuffled[list(columns.ID_COLUMNS)] = shuffled[list(columns.ID_COLUMNS)].to_numpy()[::-1]
    again = features.engineer_features(features.clean_data(shuffled))
    np.testing.assert_array_equal(encoder.transform(engineered), encoder.transform(again))


def test_encoder_target_lookup_equals_the_fitted_sklearn_target_encoder(encounters):
    engineered = features.engineer_features(features.clean_data(encounters))
    labels = columns.make_label(encounters).to_numpy()
    encoder = FeatureEncoder(min_frequency=5).fit(engineered, labels)
    codes = encoder._codes(engineered)[:, encoder._target_encoded_idx()]
    expected = encoder.target_encoder_.transform(codes)
    n_encoded = expected.shape[1]
    np.testing.assert_allclose(encoder.transform(engineered)[:, -n_encoded:], expected)
