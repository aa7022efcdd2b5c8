"""Request and response shapes of ``/v1/models`` and predict."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.api.schemas.common import UtcDatetime
from app.core.db import ModelRow
from models.card import ModelCard

ModelFormatName = Literal["torch-export", "torchscript", "onnx", "safetensors", "pth", "remote"]
DownloadFormat = Literal["original", "safetensors", "torchscript"]

CARD_EXAMPLE: dict[str, Any] = {
    "name": "chest-xray-densenet",
    "task": "multi-label",
    "labels": ["effusion", "nodule", "cardiomegaly"],
    "input": {"channels": 1, "height": 224, "width": 224},
    "preprocessing": {"mean": [0.5], "std": [0.25], "resize": "stretch"},
    "thresholds": {"effusion": 0.6},
}


class ModelInfo(BaseModel):
    """What the registry learnt when it loaded the model and gave it a dry run."""

    model_config = ConfigDict(extra="allow")

    format: ModelFormatName
    head: Literal["softmax", "sigmoid", "binary-logit"]
    output_width: int = Field(description="Outputs per image (1 for a binary-logit head).")
    fixed_batch: int | None = Field(
        description="The only batch size the program accepts (torch.export or ONNX "
        "graphs exported without a dynamic batch dimension); batches are split and padded "
        "to it. null: any batch size."
    )
    input: list[int] = Field(description="[channels, height, width]")
    parameters: int
    dry_run_ms: float = Field(description="One forward of a batch of 2 at registration.")
    device: str


class ModelPublic(BaseModel):
    id: str
    name: str
    format: ModelFormatName
    sha256: str
    size_bytes: int
    card: ModelCard
    info: ModelInfo
    lineage: dict[str, Any] | None = Field(
        default=None,
        description="For models made by a defense job: parent id, method, parameters, "
        "dataset sha256, seed.",
    )
    created_at: UtcDatetime
    links: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_row(cls, row: ModelRow) -> ModelPublic:
        base = f"/v1/models/{row.id}"
        return cls(
            id=row.id,
            name=row.name,
            format=row.format,
            sha256=row.sha256,
            size_bytes=row.size_bytes,
            card=ModelCard.model_validate(row.card),
            info=ModelInfo.model_validate(row.info),
            lineage=row.lineage,
            created_at=row.created_at,
            links={
                "self": base,
                "predict": f"{base}/predict",
                "download": f"{base}/download?format=original",
            },
        )


class ModelPage(BaseModel):
    items: list[ModelPublic]
    total: int
    limit: int
    offset: int


class Prediction(BaseModel):
    label: str
    probability: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Softmax probability or per-finding sigmoid. null with smoothing, whose "
        "answer is a vote, not a probability (see vote_share).",
    )
    vote_share: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="With smoothing only: the share of the n noisy copies that voted for this "
        "class (single-label) or found this finding (multi-label). Not a probability of "
        "disease.",
    )
    positive: bool = Field(
        description="Single-label: this is the top label. Multi-label: probability >= the "
        "card's threshold for this finding (0.5 when the card sets none); with smoothing, "
        "the majority of the votes."
    )


class SmoothedFinding(BaseModel):
    """One finding (multi-label) of a smoothed answer, certified on its own."""

    label: str
    vote_share: float = Field(ge=0.0, le=1.0, description="Share of copies with the finding.")
    positive: bool = Field(description="The majority vote.")
    certified_radius: float = Field(
        ge=0.0,
        description="L2 radius in [0, 1] pixel units within which this finding's outcome "
        "does not change, with probability >= 1 - alpha; 0 when abstained.",
    )
    p_lower: float = Field(
        ge=0.0, le=1.0, description="Lower confidence bound of the agreeing vote share."
    )
    abstained: bool = Field(description="The vote on this finding is not significant.")


class Smoothing(BaseModel):
    """Randomized smoothing (Cohen et al., ICML 2019): a majority vote over ``n`` copies of
    the image with Gaussian noise of standard deviation ``sigma`` (pixel units, [0, 1])."""

    sigma: float
    n: int = Field(description="Noisy copies counted in the vote.")
    n0: int = Field(description="Extra copies that only pick the candidate label.")
    alpha: float = Field(description="Significance level of the vote.")
    label: str | None = Field(
        description="Single-label: the majority label, null when it abstains. Multi-label: "
        "the positive finding with the largest vote share, null when none is positive."
    )
    abstained: bool = Field(
        description="Single-label: the vote is not significant at alpha. Multi-label: the "
        "vote on at least one finding is not significant."
    )
    certified_radius: float = Field(
        ge=0.0,
        description="L2 radius in [0, 1] pixel units: no perturbation with a smaller L2 norm "
        "changes the smoothed answer, with probability >= 1 - alpha. Multi-label: the "
        "smallest finding radius (each finding at 1 - alpha; all of them at 1 - K alpha). "
        "0 when abstained.",
    )
    p_lower: float = Field(
        ge=0.0,
        le=1.0,
        description="Lower confidence bound of the winning vote share (multi-label: the "
        "smallest over the findings).",
    )
    agreement_with_plain: float = Field(
        ge=0.0,
        le=1.0,
        description="Share of findings (single-label: 1 or 0 for the top label) on which "
        "the smoothed answer agrees with the model's plain answer on the clean image.",
    )
    findings: list[SmoothedFinding] | None = Field(
        default=None, description="Multi-label: each finding's vote and certificate."
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="Why the smoothed answer may mislead, e.g. it disagrees with the plain "
        "diagnosis on most findings (the model was likely not trained under noise).",
    )


class ImagePrediction(BaseModel):
    predictions: list[Prediction] = Field(description="One entry per card label, in card order.")
    top_label: str | None = Field(
        description="Single-label: the most probable label. Multi-label: the most probable "
        "positive finding, or null when no finding is positive."
    )
    smoothing: Smoothing | None = Field(
        default=None, description="Present with ?defense=smoothing."
    )


class PredictResponse(BaseModel):
    """The answer for one ``file``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_id": "3f2a9c0d1e",
                    "predictions": [
                        {"label": "benign", "probability": 0.91, "vote_share": None,
                         "positive": True},
                        {"label": "melanoma", "probability": 0.09, "vote_share": None,
                         "positive": False},
                    ],
                    "top_label": "benign",
                    "smoothing": None,
                }
            ]
        }
    )

    model_id: str
    predictions: list[Prediction]
    top_label: str | None
    smoothing: Smoothing | None = None


class NamedImagePrediction(BaseModel):
    filename: str | None
    predictions: list[Prediction]
    top_label: str | None
    smoothing: Smoothing | None = None


class PredictBatchResponse(BaseModel):
    """The answer for several ``files``: one result per file, in upload order."""

    model_id: str
    results: list[NamedImagePrediction]
