"""Accuracy measures agree with scikit-learn."""

import numpy as np
from sklearn import metrics

from mamol_core.evaluation.metrics import confusion_matrix, summarize, summary_line


def test_metrics_equal_scikit_learn():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, 2000)
    predicted = np.where(rng.random(2000) < 0.7, truth, rng.integers(0, 5, 2000))
    matrix = confusion_matrix(truth, predicted, 5)
    assert np.array_equal(matrix, metrics.confusion_matrix(truth, predicted, labels=range(5)))
    summary = summarize(matrix)
    assert np.isclose(summary["oa"], 100 * metrics.accuracy_score(truth, predicted))
    assert np.isclose(summary["kappa"], 100 * metrics.cohen_kappa_score(truth, predicted))
    assert np.isclose(summary["aa"], 100 * metrics.balanced_accuracy_score(truth, predicted))
    recall = metrics.recall_score(truth, predicted, average=None)
    precision = metrics.precision_score(truth, predicted, average=None)
    assert np.allclose(summary["producer_accuracy"], 100 * recall, atol=1e-3)
    assert np.allclose(summary["user_accuracy"], 100 * precision, atol=1e-3)


def test_absent_classes_do_not_count_in_average_accuracy():
    truth = np.array([0, 0, 1, 1])
    predicted = np.array([0, 1, 1, 1])
    summary = summarize(confusion_matrix(truth, predicted, 3))
    assert summary["producer_accuracy"][2] is None
    assert np.isclose(summary["aa"], 75.0)


def test_kappa_is_undefined_when_reference_and_predictions_hold_one_class():
    summary = summarize(confusion_matrix(np.array([1, 1, 1]), np.array([1, 1, 1]), 3))
    assert summary["oa"] == 100 and summary["kappa"] is None
    assert "kappa undefined" in summary_line("overall", summary)
    two = summarize(confusion_matrix(np.array([1, 1, 0]), np.array([1, 1, 1]), 3))
    assert np.isclose(two["kappa"], 100 * metrics.cohen_kappa_score([1, 1, 0], [1, 1, 1]))


def test_a_report_rewritten_in_its_folder_leaves_no_confusion_file_of_the_earlier_one(tmp_path):
    from mamol_core.evaluation.predict import Evaluation
    from mamol_core.evaluation.report import write_report

    matrix = np.array([[3, 1], [0, 4]])
    three = Evaluation(["a", "b"], {"overall": matrix, "complete": matrix, "missing sar": matrix}, ["hsi", "sar"])
    write_report(tmp_path, three, {})
    assert (tmp_path / "confusion_missing_sar.csv").exists()
    (tmp_path / "notes.csv").write_text("the analyst's own file")
    write_report(tmp_path, Evaluation(["a", "b"], {"overall": matrix, "complete": matrix}, ["hsi"]), {})
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == ["confusion_complete.csv", "confusion_overall.csv",
                                                               "metrics.csv", "notes.csv"]


def test_sensor_combinations_a_report_scores_poorly_or_on_few_pixels_are_warned_about():
    from mamol_core.evaluation.reports_found import FEW_PIXELS, combination_warning

    names = ["s10", "s20", "s30"]
    results = {"complete": {"oa": 95.0, "samples": 5000}, "missing s30": {"oa": 93.0, "samples": 800},
               "missing s10+s30": {"oa": 96.0, "samples": FEW_PIXELS - 89}, "missing s20+s30": {"oa": 84.0, "samples": 700},
               "missing s10+s20": {"oa": 60.0, "samples": 600}}
    assert combination_warning("m", ["s20", "s10"], names, results) is None  # 2 points under all sensors
    assert combination_warning("m", ["s20"], names, results) == (
        "m was scored from s20 on only 11 of its test pixels, too few to tell how well it maps from this sensor; evaluate it "
        "on test labels with this sensor alone (mamol-eval) before relying on the map")
    assert "m was scored from s10 + s30 on none of its test pixels" in combination_warning("m", ["s30", "s10"], names, results)
    assert combination_warning("m", ["s10"], names, results) == (
        "m scored 84.00 % overall accuracy from s10 on its test pixels (all sensors: 95.00 %); expect a weaker map from this sensor")
    assert combination_warning("m", ["s30"], names, results).startswith("m scored 60.00 % overall accuracy from s30")  # under 70
    assert combination_warning("m", names, names, results) is None and combination_warning("m", ["s10"], names, {}) is None
    unrecorded = {"missing s20+s30": {"oa": 50.0}}  # a report without counts or the complete pattern
    assert combination_warning("m", ["s10"], names, unrecorded) == (
        "m scored 50.00 % overall accuracy from s10 on its test pixels; expect a weaker map from this sensor")
    assert combination_warning("m", ["s10"], names, {"missing s20+s30": {"oa": None, "samples": 500}}) is None  # nothing scored


def test_a_map_predicted_from_a_weak_combination_on_much_of_it_is_warned_about():
    from mamol_core.evaluation.reports_found import WEAK_SHARE, coverage_warnings

    names = ["hsi", "lidar", "sar"]
    results = {"complete": {"oa": 95.0, "samples": 5000}, "missing hsi+sar": {"oa": 48.1, "samples": 900},
               "missing lidar+sar": {"oa": 92.0, "samples": 900}, "missing sar": {"oa": 94.0, "samples": 900}}
    combinations = np.zeros(8, np.int64)
    combinations[[0, 1, 2, 3]] = [500, 100, 690, 210]  # none, hsi only, lidar only, hsi + lidar
    lines = coverage_warnings("m", ["hsi", "lidar"], names, combinations, results)
    assert lines == ["69% of the map (690 px) was predicted from lidar alone, the other sensors given holding no data there "
                     "(map with --availability to see where): m scored 48.10 % overall accuracy from lidar on its test pixels (all "
                     "sensors: 95.00 %); expect a weaker map from this sensor"]  # hsi alone maps well; the pixels of none do not count
    combinations[2] = int(WEAK_SHARE * 310 / (1 - WEAK_SHARE))  # under 5 % of the 310 + it pixels mapped
    assert coverage_warnings("m", ["hsi", "lidar"], names, combinations, results) == []  # too small a share to mention
    combinations[2] = 690
    assert coverage_warnings("m", ["lidar"], names, np.array([0, 0, 690, 0, 0, 0, 0, 0]), results) == []  # warned before the run
    assert coverage_warnings("m", ["hsi", "lidar"], names, combinations, {}) == []  # no report
