"""``clinical``: flip directions counted on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from models.card import Head, ModelCard
from models.errors import InvalidParametersError
from models.wrapper import DiagnosticModel
from workers.analyses.alignment import attack_field
from workers.analyses.base import BatchContext, SummaryContext
from workers.analyses.clinical import ClinicalAnalysis, healthy_index, is_healthy_label

KEY = "pgd:eps=4/255"


def arrays_for(labels: np.ndarray, clean: np.ndarray, adv: np.ndarray) -> dict[str, np.ndarray]:
    n = labels.shape[0]
    return {
        "index": np.arange(n),
        "labels": labels,
        "clean_pred": clean,
        attack_field("adv_index", KEY): np.arange(n),
        attack_field("adv_pred", KEY): adv,
    }


def ctx(task: str, labels: tuple[str, ...], **params: str) -> SummaryContext:
    return SummaryContext(labels=labels, task=task, head="softmax", attack_keys=[KEY],
                          params=dict(params))


@pytest.mark.parametrize(
    "label", ["No Finding", "no_finding", "Normal", "BENIGN", "healthy", "grade 0", "Grade-0",
              "no DR", "noDR"],
)
def test_healthy_names(label: str) -> None:
    assert is_healthy_label(label)


@pytest.mark.parametrize("label", ["Melanoma", "grade 1", "Nodule", "abnormal", "DR"])
def test_disease_names(label: str) -> None:
    assert not is_healthy_label(label)


def test_override_must_be_a_label() -> None:
    assert healthy_index(("nevus", "melanoma"), "nevus") == 0
    with pytest.raises(InvalidParametersError, match="healthy_label 'benign' is not a label"):
        healthy_index(("nevus", "melanoma"), "benign")


def test_single_label_hand_case() -> None:
    # classes: 0 = grade 0 (healthy), 1 = grade 1, 2 = grade 2
    truth = np.array([1, 1, 2, 2, 0, 0, 0, 1, 2, 0])
    clean = np.array([1, 1, 2, 0, 0, 0, 0, 2, 2, 1])
    adv = np.array([0, 1, 0, 0, 2, 0, 1, 1, 1, 0])
    # row 0: grade1 called 1 -> healthy: missed (class 1)
    # row 2: grade2 called 2 -> healthy: missed (class 2)
    # row 3: grade2 called healthy on clean: not at risk of a miss
    # row 4: healthy called healthy -> 2: false alarm to class 2
    # row 6: healthy called healthy -> 1: false alarm to class 1
    # row 7: grade1 called 2 -> 1: disease swap (2 -> 1)
    # row 8: grade2 called 2 -> 1: disease swap (2 -> 1)
    # row 9: healthy called 1 on clean -> healthy: not at risk of a false alarm
    sec = ClinicalAnalysis().summarize(
        arrays_for(truth, clean, adv), ctx("single-label", ("grade 0", "grade 1", "grade 2"))
    )
    assert sec.applicable
    assert sec.data["healthy_label"] == "grade 0"
    block = sec.data["attacks"][KEY]
    assert block["missed_disease"] == {"count": 2, "at_risk": 5, "rate": pytest.approx(0.4)}
    assert block["false_alarm"] == {"count": 2, "at_risk": 3, "rate": pytest.approx(2 / 3)}
    assert block["per_label"]["grade 1"]["missed_disease"]["count"] == 1
    assert block["per_label"]["grade 1"]["missed_disease"]["at_risk"] == 3
    assert block["per_label"]["grade 2"]["missed_disease"]["count"] == 1
    assert block["per_label"]["grade 2"]["false_alarm"]["count"] == 1
    assert block["per_label"]["grade 1"]["false_alarm"]["count"] == 1
    assert block["disease_swaps"] == 2
    assert block["per_label"]["grade 2"]["disease_swaps_from"] == 2
    assert block["per_label"]["grade 1"]["disease_swaps_to"] == 2
    flips = block["prediction_flips"]
    assert flips == {"diseased_to_healthy": 3, "healthy_to_diseased": 2,
                     "disease_to_other_disease": 2}
    assert [f.name for f in sec.figures] == ["clinical_flips"]


def test_multi_label_hand_case() -> None:
    labels = ("Effusion", "No Finding", "Nodule")
    truth = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 0], [0, 1, 0], [0, 0, 1]])
    clean = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 0], [0, 1, 0], [0, 0, 0]])
    adv = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 0]])
    sec = ClinicalAnalysis().summarize(arrays_for(truth, clean, adv), ctx("multi-label", labels))
    block = sec.data["attacks"][KEY]
    assert sec.data["diseases"] == ["Effusion", "Nodule"]
    assert "No Finding" not in block["per_label"]
    eff, nod = block["per_label"]["Effusion"], block["per_label"]["Nodule"]
    assert eff["missed_disease"] == {"count": 1, "at_risk": 2, "rate": 0.5}
    assert eff["false_alarm"] == {"count": 0, "at_risk": 3, "rate": 0.0}
    assert nod["missed_disease"] == {"count": 1, "at_risk": 1, "rate": 1.0}
    # images 2 and 3 are healthy, 4 has a nodule missed on clean already.
    assert nod["false_alarm"] == {"count": 1, "at_risk": 3, "rate": pytest.approx(1 / 3)}
    assert block["images_made_healthy"] == {"count": 1, "at_risk": 2, "rate": 0.5}
    assert block["images_made_diseased"] == {"count": 1, "at_risk": 2, "rate": 0.5}
    assert block["missed_disease"]["count"] == 2
    assert block["prediction_flips"] == {"positive_to_negative": 2, "negative_to_positive": 1}


def test_single_label_without_healthy_class_is_not_applicable() -> None:
    truth = np.array([0, 1])
    sec = ClinicalAnalysis().summarize(arrays_for(truth, truth, truth),
                                       ctx("single-label", ("cat", "dog")))
    assert not sec.applicable
    assert "healthy_label" in (sec.reason or "")
    named = ClinicalAnalysis().summarize(arrays_for(truth, truth, 1 - truth),
                                         ctx("single-label", ("cat", "dog"), healthy_label="cat"))
    assert named.applicable
    assert named.data["attacks"][KEY]["missed_disease"]["count"] == 1
    assert named.data["attacks"][KEY]["false_alarm"]["count"] == 1


def test_collect_uses_model_predictions() -> None:
    torch.manual_seed(0)
    card = ModelCard(name="bin", task="single-label", labels=("benign", "melanoma"),
                     input={"channels": 1, "height": 8, "width": 8})
    fc = nn.Linear(64, 1)
    net = nn.Sequential(nn.Flatten(), fc)
    model = DiagnosticModel(net, card, Head.BINARY_LOGIT).eval()
    x = torch.rand(12, 1, 8, 8)
    with torch.no_grad():
        pred = model.predict(x)
    # An "attack" that moves every image to the other side of the decision boundary.
    w = fc.weight.detach().reshape(1, 1, 8, 8)
    logit = model(x).detach().reshape(-1, 1, 1, 1)
    adv = x - 2 * logit * w / (w**2).sum()
    batch = BatchContext(model=model, clean=x, labels=pred, adversarial={KEY: adv},
                         indices=np.arange(12), seed=0)
    arrays = ClinicalAnalysis().collect(batch)
    assert np.array_equal(arrays["clean_pred"], pred.numpy())
    assert np.array_equal(arrays[attack_field("adv_pred", KEY)], 1 - pred.numpy())
    sec = ClinicalAnalysis().summarize(arrays, ctx("single-label", card.labels))
    block = sec.data["attacks"][KEY]
    n_sick = int(pred.sum())
    assert block["missed_disease"]["count"] == n_sick
    assert block["false_alarm"]["count"] == 12 - n_sick
