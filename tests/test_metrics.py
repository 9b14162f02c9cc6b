"""Built-in metrics: classification (top-1, top-5, macro precision/recall/F1) and errors (MSE, MAE)."""
import numpy as np
import pytest

from harness.metrics import METRICS, Metric, metric, resolve_metric


def one_hot_scores(predicted, classes):
    scores = np.zeros((len(predicted), classes), dtype=np.float32)
    scores[np.arange(len(predicted)), predicted] = 1.0
    return {"logits": scores}


def test_macro_precision_recall_f1_by_hand():
    # class 0: 2 right of 4 predicted, 2 of 2 found; class 1: 1 of 1 predicted, 1 of 2 found;
    # class 2: never predicted (precision 0), 0 of 1 found
    labels = np.array([0, 0, 1, 1, 2])
    outputs = one_hot_scores([0, 0, 1, 0, 0], 3)
    p = [2 / 4, 1.0, 0.0]
    r = [1.0, 0.5, 0.0]
    f = [2 * a * b / (a + b) if a + b else 0.0 for a, b in zip(p, r)]
    assert METRICS["precision_macro"].score(outputs, labels) == pytest.approx(np.mean(p))
    assert METRICS["recall_macro"].score(outputs, labels) == pytest.approx(np.mean(r))
    assert METRICS["f1_macro"].score(outputs, labels) == pytest.approx(np.mean(f))
    assert METRICS["top1"].score(outputs, labels) == pytest.approx(3 / 5)


def test_macro_metrics_equal_scikit_learns():
    """The numpy macro averages against precision_recall_fscore_support(average="macro",
    zero_division=0), on random predictions where classes go missing from either side."""
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(0)
    for trial in range(40):
        classes = int(rng.integers(2, 12))
        n = int(rng.integers(1, 60))
        labels = rng.integers(0, classes, size=n)
        predicted = rng.integers(0, classes, size=n) if trial % 3 else labels.copy()
        outputs = one_hot_scores(predicted, classes)
        want = precision_recall_fscore_support(labels, predicted, average="macro", zero_division=0)
        for i, name in enumerate(("precision_macro", "recall_macro", "f1_macro")):
            assert METRICS[name].score(outputs, labels) == pytest.approx(want[i], abs=1e-12), (trial, name)


def test_top5_counts_the_five_highest_and_is_absent_with_five_classes():
    labels = np.array([3, 7])
    scores = np.array([[9, 8, 7, 6, 5, 4, 3, 2],  # 3 is 4th highest: in the top 5
                       [9, 8, 7, 6, 5, 4, 3, 2]], dtype=np.float32)  # 7 is last: not
    assert METRICS["top5"].score({"y": scores}, labels) == 0.5
    five = {"y": np.eye(5, dtype=np.float32)[[0, 1]]}
    assert METRICS["top5"].score_or_none(five, labels % 5) is None
    with pytest.raises(ValueError, match="does not apply"):
        METRICS["top5"].score(five, labels % 5)


def test_the_chosen_metric_carries_the_others_as_companions():
    labels = np.arange(10) % 8
    outputs = one_hot_scores((np.arange(10) + 1) % 8, 8)
    companions = METRICS["f1_macro"].companion_scores(outputs, labels)
    assert set(companions) == {"top1", "top5", "precision_macro", "recall_macro"}
    assert companions["top1"] == METRICS["top1"].score(outputs, labels)
    small = one_hot_scores([0, 1, 1], 3)
    assert set(METRICS["top1"].companion_scores(small, np.array([0, 1, 2]))) == {"precision_macro", "recall_macro", "f1_macro"}


def test_classification_metrics_name_bad_labels():
    with pytest.raises(ValueError, match="integer class label"):
        METRICS["top1"].score(one_hot_scores([0, 1], 2), np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="3 outputs for 2 labels"):
        METRICS["f1_macro"].score(one_hot_scores([0, 1, 1], 2), np.array([0, 1]))
    with pytest.raises(ValueError, match="needs labels"):
        METRICS["recall_macro"].score(one_hot_scores([0, 1], 2), None)


def test_errors_are_lower_is_better_and_score_the_first_output():
    targets = np.array([[1.0, 2.0], [3.0, 4.0]])
    outputs = {"pred": np.array([[1.5, 2.0], [3.0, 2.0]], dtype=np.float32), "other": np.zeros(2)}
    assert METRICS["mse"].score(outputs, targets) == pytest.approx((0.25 + 4.0) / 4)
    assert METRICS["mae"].score(outputs, targets) == pytest.approx((0.5 + 2.0) / 4)
    assert not METRICS["mse"].higher_is_better and not METRICS["mae"].higher_is_better
    assert METRICS["mse"].companion_scores(outputs, targets) == {"mae": pytest.approx(0.625)}
    with pytest.raises(ValueError, match="cannot be compared"):
        METRICS["mae"].score(outputs, np.zeros(3))


def test_a_user_metric_sees_every_output_by_name_and_declares_its_direction():
    def box_error(outputs, labels):
        return float(np.mean(np.abs(outputs["boxes"] - labels))) + 0.0 * outputs["scores"].sum()

    metric = resolve_metric(Metric("box_error", box_error, higher_is_better=False))
    outputs = {"scores": np.ones((2, 3)), "boxes": np.array([[0.0, 1.0], [2.0, 3.0]])}
    assert metric.score(outputs, np.array([[0.0, 1.0], [2.0, 4.0]])) == pytest.approx(0.25)
    assert not metric.higher_is_better


def test_a_plain_function_can_ask_for_every_output():
    @metric(higher_is_better=False, all_outputs=True)
    def box_error(outputs, labels):
        assert set(outputs) == {"scores", "boxes"}
        return float(np.mean(np.abs(outputs["boxes"] - labels)))

    resolved = resolve_metric(box_error)
    outputs = {"scores": np.ones((2, 3)), "boxes": np.array([[0.0, 1.0], [2.0, 3.0]])}
    assert resolved.name == "box_error" and not resolved.higher_is_better
    assert resolved.score(outputs, np.array([[0.0, 1.0], [2.0, 4.0]])) == pytest.approx(0.25)
