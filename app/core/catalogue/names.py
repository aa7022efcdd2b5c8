"""The names of the engine's attacks, analyses, defenses, perturbations, policy rules and
formats; ``tests/test_layering.py`` keeps each list equal to the engine's own registry."""

from __future__ import annotations

ATTACK_NAMES: tuple[str, ...] = (
    "apgd", "autoattack", "bim", "cw_l2", "deepfool", "fgsm", "gap", "min_eps", "pgd", "square",
    "uap",
)
ANALYSIS_NAMES: tuple[str, ...] = (
    "clinical", "discriminability", "features", "gradcam", "label_correlation",
    "perturbations", "quantitative", "sanity",
)
DEFENSE_METHODS: tuple[str, ...] = ("clean", "maadvt", "mpadvt", "noise", "pgd_at", "trades")

PERTURBATION_NAMES: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "speckle_noise", "gaussian_blur", "defocus_blur",
    "motion_blur", "zoom_blur", "brightness", "contrast", "gamma", "dicom_window_shift",
    "bit_depth", "jpeg", "translation", "rotation", "tilt", "scaling", "shear", "grid_lines",
    "text_markers", "hair", "black_corners", "air_bubbles", "uneven_illumination",
)

#: Per-attack policy rules (a threshold per attack key or ``"*"``).
ATTACK_POLICY_RULES: tuple[str, ...] = (
    "min_accuracy", "min_balanced_accuracy", "min_auroc", "max_fooling_rate",
    "max_attack_success_rate", "max_accuracy_drop",
)
#: Audit-wide policy rules (one threshold).
GLOBAL_POLICY_RULES: tuple[str, ...] = (
    "min_clean_accuracy", "min_clean_auroc", "min_subgroup_clean_accuracy",
)
#: Per-budget rules on the worst case over a budget's attacks (a threshold per budget,
#: written ``[norm:]eps=value`` like ``"linf:eps=4/255"``, or one for every budget).
BUDGET_POLICY_RULES: tuple[str, ...] = (
    "min_robust_accuracy", "min_robust_auroc", "min_subgroup_robust_accuracy",
)
#: Policy rules that take ``true`` instead of a threshold.
FLAG_POLICY_RULES: tuple[str, ...] = ("require_reliable",)
POLICY_RULES: tuple[str, ...] = (
    *GLOBAL_POLICY_RULES, *ATTACK_POLICY_RULES, *BUDGET_POLICY_RULES, *FLAG_POLICY_RULES,
)
#: A policy may also compare with a baseline audit (:mod:`app.core.comparison`).
BASELINE_POLICY_KEYS: tuple[str, ...] = ("baseline", "max_regression")

MODEL_FORMATS: tuple[str, ...] = ("torch-export", "torchscript", "pth", "safetensors", "onnx")
DATASET_FORMATS: tuple[str, ...] = ("imagefolder", "csv", "medmnist-npz", "dicom")
