"""Data with a protected attribute and the fairness metrics: digits_groups' construction, the
CelebA and ISIC-2018 loaders on small files in their real layouts, the attribute knobs' checks,
and fairlearn's metrics against hand computations on tiny tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skillearn.data import BatchStream, DataError, DataSpec, check_data_spec, load_data
from skillearn.data.digits_groups import load_digits_groups_raw
from skillearn.trainables import ConfigError, get_skill, resolve_config
from skillearn.trainables.fairness import fairness_report
from skillearn.trainables.runner import run_skill

# --- metrics against hand computations -----------------------------------------------------


def test_binary_metrics_match_a_hand_computation() -> None:
    # group 0: selection 2/4, TPR 2/2, FPR 0/2, accuracy 4/4
    # group 1: selection 1/4, TPR 1/2, FPR 0/2, accuracy 3/4
    y_true = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    y_pred = np.array([1, 1, 0, 0, 1, 0, 0, 0])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    report = fairness_report(y_true, y_pred, groups, 2, ("a", "b"))
    assert report["dp_diff"] == pytest.approx(0.25)
    assert report["eo_diff"] == pytest.approx(0.5)  # max(TPR gap 0.5, FPR gap 0)
    assert report["eopp_diff"] == pytest.approx(0.5)
    assert report["worst_group_acc"] == pytest.approx(0.75)
    assert json.loads(report["group_acc"]) == {"a": 1.0, "b": 0.75}


def test_multiclass_metrics_average_one_vs_rest_gaps() -> None:
    # class 0: selection 1/3 vs 1/3, TPR 1 vs 1, FPR 0 vs 0     -> dp 0,   eo 0,   eopp 0
    # class 1: selection 1/3 vs 0,   TPR 1 vs 0, FPR 0 vs 0     -> dp 1/3, eo 1,   eopp 1
    # class 2: selection 1/3 vs 2/3, TPR 1 vs 1, FPR 0 vs 1/2   -> dp 1/3, eo 1/2, eopp 0
    y_true = np.array([0, 1, 2, 0, 1, 2])
    y_pred = np.array([0, 1, 2, 0, 2, 2])
    groups = np.array([0, 0, 0, 1, 1, 1])
    report = fairness_report(y_true, y_pred, groups, 3, prefix="test_")
    assert report["test_dp_diff"] == pytest.approx(2 / 9)
    assert report["test_eo_diff"] == pytest.approx(0.5)
    assert report["test_eopp_diff"] == pytest.approx(1 / 3)
    assert report["test_worst_group_acc"] == pytest.approx(2 / 3)


def test_equal_predictions_across_groups_have_no_gap() -> None:
    y = np.array([0, 1, 0, 1])
    report = fairness_report(y, y, np.array([0, 0, 1, 1]), 2)
    assert report["dp_diff"] == report["eo_diff"] == report["eopp_diff"] == 0.0


# --- digits_groups -------------------------------------------------------------------------


def test_digits_groups_attribute_follows_the_label_in_train_but_not_in_test() -> None:
    data = load_data(DataSpec(name="digits_groups", seed=3))
    for split in (data.train, data.val):
        agree = ((split.clean_y >= 5).long() == split.sensitive).float().mean()
        assert 0.85 < float(agree) < 0.95
    agree_test = ((data.test.clean_y >= 5).long() == data.test.sensitive).float().mean()
    assert 0.4 < float(agree_test) < 0.6
    assert data.sensitive_name == "inverted" and data.record["group_counts"]["test"]
    assert set(data.test.sensitive.tolist()) == {0, 1}


def test_digits_groups_inverts_exactly_the_attribute_rows() -> None:
    from sklearn.datasets import load_digits

    original = load_digits().images
    raw = load_digits_groups_raw(DataSpec(name="digits_groups", group_correlation=1.0))
    assert np.array_equal(raw.sensitive, (raw.y >= 5).astype(np.int64))
    # each image is a digits image, inverted (16 - p) where the attribute says so
    for image, s in zip(raw.x[:40, 0], raw.sensitive[:40], strict=True):
        plain = 16 - image if s else image
        assert (np.abs(original - plain).reshape(len(original), -1).max(1) == 0).any()


def test_batches_never_carry_the_attribute() -> None:
    data = load_data(DataSpec(name="digits_groups"))
    batch = next(iter(BatchStream(data.train, 8, seed=0)))
    assert len(batch) == 3  # x, y, id
    assert data.without_sensitive().train.sensitive is None


# --- CelebA and ISIC-2018 in their real layouts ----------------------------------------------


def _image(path: Path, value: int) -> None:
    Image.fromarray(np.full((20, 16, 3), value, dtype=np.uint8)).save(path)


def make_celeba(root: Path, rows: list[tuple[str, int, int, int]]) -> None:
    (root / "img_align_celeba").mkdir(parents=True)
    lines = [str(len(rows)), "Attractive Male Young"]
    for name, attractive, male, young in rows:
        _image(root / "img_align_celeba" / name, 120 + 10 * attractive + 100 * male)
        lines.append(f"{name} {' '.join(f'{v:2d}' for v in (attractive, male, young))}")
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")


CELEBA_ROWS = [(f"{i:06d}.jpg", 1 if i % 2 else -1, 1 if i % 3 else -1, 1 if i % 5 else -1)
               for i in range(1, 21)]


def test_celeba_reads_target_and_attribute_by_name(tmp_path: Path) -> None:
    make_celeba(tmp_path, CELEBA_ROWS)
    data = load_data(DataSpec(name="celeba", root=str(tmp_path), val_fraction=0.3))
    assert data.input_shape == (3, 32, 32) and data.classes == ["not Attractive", "Attractive"]
    ids = torch.cat([data.train.index, data.val.index, data.test.index])
    y = torch.cat([data.train.y, data.val.y, data.test.y])
    s = torch.cat([data.train.sensitive, data.val.sensitive, data.test.sensitive])
    for i, yi, si in zip(ids.tolist(), y.tolist(), s.tolist(), strict=True):
        _, attractive, male, _ = CELEBA_ROWS[i]
        assert (yi, si) == (int(attractive == 1), int(male == 1))
    young = load_data(DataSpec(name="celeba", root=str(tmp_path), val_fraction=0.3,
                               target_attribute="Young", sensitive_attribute="Attractive"))
    assert young.sensitive_name == "Attractive" and young.classes[1] == "Young"


def test_celeba_input_errors_are_one_line_before_reading(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="needs data_root"):
        check_data_spec(DataSpec(name="celeba"))
    with pytest.raises(DataError, match="list_attr_celeba.txt is missing"):
        check_data_spec(DataSpec(name="celeba", root=str(tmp_path)))
    make_celeba(tmp_path, CELEBA_ROWS[:4])
    with pytest.raises(DataError, match="'Smiling' is not a column"):
        check_data_spec(DataSpec(name="celeba", root=str(tmp_path),
                                 sensitive_attribute="Smiling"))
    with open(tmp_path / "list_attr_celeba.txt", "a") as f:
        f.write("000099.jpg 1 0 1\n")
    with pytest.raises(DataError, match="line 7"):
        load_data(DataSpec(name="celeba", root=str(tmp_path)))


def make_isic(root: Path) -> list[tuple[str, str, str, str]]:
    (root / "ISIC2018_Task3_Training_Input").mkdir(parents=True)
    rows = [(f"ISIC_{i:07d}", ("nv", "mel", "bkl")[i % 3], ("male", "female", "unknown")[i % 4 % 3],
             str(30 + 5 * i) if i != 7 else "") for i in range(24)]
    lines = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    for image_id, dx, sex, age in rows:
        _image(root / "ISIC2018_Task3_Training_Input" / f"{image_id}.jpg", 50)
        lines.append(f"HAM_{image_id[5:]},{image_id},{dx},histo,{age},{sex},back")
    (root / "HAM10000_metadata.csv").write_text("\n".join(lines) + "\n")
    return rows


def test_isic_reads_diagnosis_and_sex_or_age(tmp_path: Path) -> None:
    rows = make_isic(tmp_path)
    data = load_data(DataSpec(name="isic2018", root=str(tmp_path), test_fraction=0.25))
    known_sex = [r for r in rows if r[2] != "unknown"]
    total = len(data.train) + len(data.val) + len(data.test)
    assert total == len(known_sex) and data.classes == ["bkl", "mel", "nv"]
    assert data.sensitive_groups == ("female", "male")
    by_age = load_data(DataSpec(name="isic2018", root=str(tmp_path), test_fraction=0.25,
                                sensitive_attribute="age"))
    assert len(by_age.train) + len(by_age.val) + len(by_age.test) == len(rows) - 1  # no age
    with pytest.raises(DataError, match="sex, age"):
        check_data_spec(DataSpec(name="isic2018", root=str(tmp_path),
                                 sensitive_attribute="skin"))


# --- knobs checked before any work -----------------------------------------------------------


@pytest.mark.parametrize(("spec", "message"), [
    (DataSpec(name="digits_groups", sensitive_attribute="gender"), "must be 'inverted'"),
    (DataSpec(name="digits", target_attribute="Attractive"), "has no attribute columns"),
    (DataSpec(name="digits_groups", group_correlation=1.5), "group_correlation"),
    (DataSpec(name="digits_groups", target_attribute=3), "must be a string"),
])
def test_bad_attribute_settings_are_data_errors(spec: DataSpec, message: str) -> None:
    with pytest.raises(DataError, match=message):
        check_data_spec(spec)


def test_attribute_knobs_are_typed() -> None:
    skill = get_skill("darts")
    with pytest.raises(ConfigError, match="group_correlation"):
        resolve_config(skill, {"group_correlation": "high"})
    with pytest.raises(ConfigError, match="sensitive_attribute"):
        resolve_config(skill, {"sensitive_attribute": 1})


# --- every skill reports the same fairness numbers on such data ----------------------------


def test_darts_trials_on_digits_groups_report_fairness_metrics() -> None:
    config = {"dataset": "digits_groups", "epochs": 1, "steps_per_epoch": 1, "nodes": 1,
              "cells": 1, "channels": 4, "fd_gap_every": 0, "batch_size": 16}
    metrics = run_skill("darts", config, lambda m, c: None)
    for split in ("val", "test"):
        for key in ("dp_diff", "eo_diff", "eopp_diff", "worst_group_acc"):
            assert 0.0 <= metrics[f"{split}_{key}"] <= 1.0
        assert set(json.loads(metrics[f"{split}_group_acc"])) == {"plain", "inverted"}
    plain = run_skill("darts", {**config, "dataset": "digits"}, lambda m, c: None)
    assert "test_dp_diff" not in plain
