"""``gradcam``: where the network looks, clean vs adversarial.

Grad-CAM: Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra, "Grad-CAM: Visual
Explanations from Deep Networks via Gradient-based Localization", ICCV 2017. For a score
``y`` and the activations ``A`` ``[C, h, w]`` of the last convolutional block::

    alpha_c = mean_{i,j} dy / dA_c[i, j]          cam = ReLU(sum_c alpha_c A_c)

upsampled bilinearly to the input size ``H x W`` and scaled to ``[0, 1]`` per image (a map
that is zero everywhere stays zero and is counted as degenerate).

Xu et al. (2021) show the response areas of a diagnostic network moving away from the
lesion under attack. For each attack setting this measures, per image:

- ``iou``: overlap (intersection over union) of the top regions of the clean and the
  adversarial maps; a top region is the ``top_fraction`` (20%) of pixels with the highest
  values (ties at the threshold included; zero pixels never count);
- ``com_shift_px``: distance between the maps' centres of mass, in input pixels, and
  ``com_shift_fraction``, the same over the image diagonal;
- with lesion masks (``BatchContext.masks``), the share of each map's mass inside the
  lesion, clean and adversarial (undefined for images without a lesion).

Scores explained: single-label, the predicted class of each image (``target="predicted"``;
the adversarial map explains the adversarial prediction), or the clean prediction on both
(``"clean-prediction"``), or the true class (``"label"``); a binary-logit head scores class 1
with its logit and class 0 with the negated logit. Multi-label: one finding per image,
chosen on the clean image and explained on both (the finding furthest above its
threshold, or the nearest below it when none is positive; with ``"label"``, the first true
finding), or every finding named in ``findings``.

Batched: one forward and one backward per batch and per explained finding, never per
image (images are independent in eval mode, so the gradient of the summed scores gives
each image its own). A few thumbnails per batch (``sample_*`` arrays) feed the gallery.

Arrays: ``index``, ``clean_target`` ``[N, F]``, ``clean_degenerate`` ``[N, F]``,
``lesion_share_clean`` ``[N, F]``; per attack ``adv_index[k]``, ``fooled[k]`` ``[N]``,
``adv_target[k]``, ``adv_degenerate[k]``, ``iou[k]``, ``com_shift_px[k]``,
``com_shift_fraction[k]``, ``lesion_share_adv[k]`` (``[N, F]``); samples ``sample_index``,
``sample_image`` ``[S, C, h, w]`` uint8, ``sample_cam`` ``[S, h, w]`` uint8,
``sample_target``, ``sample_fooled``, ``sample_adv[k]``, ``sample_adv_cam[k]``,
``sample_adv_target[k]``; texts ``layer``, ``target``, ``findings``, ``image_size``.
"""

from __future__ import annotations

import json
import math
import weakref
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from app.core.catalogue.analyses import GradCAMParams
from models.card import Head
from models.errors import InvalidParametersError
from models.heads import predict
from models.wrapper import DiagnosticModel
from workers.analyses.alignment import attack_field
from workers.analyses.analysis_params import parse_params
from workers.analyses.base import Analysis, BatchContext, Section, SummaryContext
from workers.analyses.feature_arrays import (
    not_applicable_arrays,
    not_applicable_reason,
    read_text,
    text_array,
    unique_rows,
)
from workers.analyses.gradcam_figures import gallery_figure
from workers.analyses.gradcam_maps import (
    centre_of_mass,
    grad_cam,
    iou,
    mass_inside,
    target_scores,
    top_region,
)
from workers.analyses.jsonable import jsonable
from workers.analyses.layer_taps import LayerReader
from workers.analyses.layers import (
    LayerAccessError,
    TapPoint,
    cam_candidates,
    module_tree,
    validate_layers,
)
from workers.analyses.stats import nanmean

__all__ = ["GradCAMAnalysis", "GradCAMParams", "centre_of_mass", "choose_layer", "grad_cam",
           "iou", "mass_inside", "target_scores", "top_region"]
from workers.analyses.tensors import thumbnail, to_uint8

Target = Literal["predicted", "clean-prediction", "label"]
THUMBNAIL = 128




def _thumbnail(x: Tensor) -> Tensor:
    return thumbnail(x, THUMBNAIL)


# --------------------------------------------------------------------------- analysis

_CHOSEN_LAYER: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def choose_layer(model: DiagnosticModel) -> str:
    """The deepest candidate block with a spatial ``[N, C, h, w]`` output (``h * w > 1``
    preferred), found with one forward pass of a blank image and remembered per network."""
    if model.net in _CHOSEN_LAYER:
        return _CHOSEN_LAYER[model.net]
    candidates = cam_candidates(model)
    reader = LayerReader(model, [TapPoint(c) for c in candidates])
    c, h, w = model.input_shape
    probe = torch.full((1, c, h, w), 0.5, device=model.device)
    with torch.no_grad():
        _, acts = reader(probe)
    spatial = [name for name, a in zip(candidates, acts, strict=True) if a.dim() == 4]
    wide = [name for name, a in zip(candidates, acts, strict=True)
            if a.dim() == 4 and a.shape[2] * a.shape[3] > 1]
    if not spatial:
        raise LayerAccessError(
            "no block with a spatial [N, C, h, w] output found for Grad-CAM; name one with "
            "the 'layer' parameter"
        )
    layer = (wide or spatial)[0]
    _CHOSEN_LAYER[model.net] = layer
    return layer


class GradCAMAnalysis(Analysis):
    """Grad-CAM shift between clean and adversarial images (module docstring)."""

    name: ClassVar[str] = "gradcam"
    Params: ClassVar[type[GradCAMParams]] = GradCAMParams

    def parse_params(self, params: dict[str, Any] | None) -> GradCAMParams:
        return parse_params(GradCAMParams, params, self.name)

    def not_applicable(self, model: DiagnosticModel) -> str | None:
        try:
            choose_layer(model)
        except LayerAccessError as exc:
            return str(exc)
        return None

    def _findings(self, model: DiagnosticModel, params: GradCAMParams) -> list[int] | None:
        if params.findings is None:
            return None
        if model.head != Head.SIGMOID:
            raise InvalidParametersError("findings apply to multi-label models only")
        unknown = [f for f in params.findings if f not in model.labels]
        if unknown:
            raise InvalidParametersError(
                f"unknown finding(s) {unknown}; valid: {', '.join(model.labels)}"
            )
        return [model.labels.index(f) for f in params.findings]

    def collect(self, ctx: BatchContext) -> dict[str, np.ndarray]:
        params = self.parse_params(ctx.params)
        model = ctx.model
        findings = self._findings(model, params)
        n = ctx.clean.shape[0]
        index = np.asarray(ctx.indices).astype(np.int64)
        try:
            if params.layer is not None:
                validate_layers(module_tree(model.net), [params.layer])
                layer = params.layer
            else:
                layer = choose_layer(model)
            reader = LayerReader(model, [TapPoint(layer)])
            out = self._collect(ctx, reader, params, findings, index)
        except LayerAccessError as exc:
            if params.layer is not None:
                # The user's layer exists but cannot be explained: their error, not N/A.
                raise InvalidParametersError(str(exc)) from exc
            return {"index": index, **not_applicable_arrays(str(exc), n)}
        h, w = ctx.clean.shape[2], ctx.clean.shape[3]
        out.update(text_array("layer", layer, n))
        out.update(text_array("target", params.target, n))
        names = [model.labels[i] for i in findings] if findings is not None else None
        out.update(text_array("findings", json.dumps(names), n))
        out.update(text_array("image_size", json.dumps([h, w]), n))
        return out

    def _collect(
        self,
        ctx: BatchContext,
        reader: LayerReader,
        params: GradCAMParams,
        findings: list[int] | None,
        index: np.ndarray,
    ) -> dict[str, np.ndarray]:
        model, head = ctx.model, ctx.model.head
        n, h, w = ctx.clean.shape[0], ctx.clean.shape[2], ctx.clean.shape[3]
        labels = ctx.labels.to(ctx.clean.device)
        thresholds = model.thresholds.to(ctx.clean.device)

        def clean_choice(logits: Tensor) -> Tensor:
            if findings is not None:
                return torch.tensor(findings, device=logits.device).view(-1, 1).expand(-1, n)
            if head == Head.SIGMOID:
                margin = torch.sigmoid(logits) - thresholds
                if params.target == "label":
                    truth = labels > 0.5
                    first = truth.float().argmax(dim=1)
                    return torch.where(truth.any(dim=1), first, margin.argmax(dim=1)).view(1, n)
                return margin.argmax(dim=1).view(1, n)
            if params.target == "label":
                return labels.long().view(1, n)
            return model_predict(logits, head, thresholds).view(1, n)

        clean_maps, clean_logits, clean_targets = grad_cam(reader, ctx.clean, clean_choice, head)
        clean_pred = model_predict(clean_logits, head, thresholds)
        out: dict[str, np.ndarray] = {
            "index": index,
            "clean_target": _np(clean_targets.T, np.int16),
            "clean_degenerate": _np(clean_maps.flatten(2).amax(2).T == 0, np.bool_),
        }
        masks = ctx.masks[:, 0].to(clean_maps) if ctx.masks is not None else None
        if masks is not None:
            out["lesion_share_clean"] = _np(
                torch.stack([mass_inside(m, masks) for m in clean_maps], dim=1), np.float32
            )
        clean_top = [top_region(m, params.top_fraction) for m in clean_maps]
        clean_com = [centre_of_mass(m) for m in clean_maps]
        diagonal = math.hypot(h, w)
        fooled_first: Tensor | None = None
        adv_keep: dict[str, tuple[Tensor, Tensor]] = {}
        for key, adv in ctx.adversarial.items():

            def adv_choice(logits: Tensor) -> Tensor:
                if params.target == "predicted" and head != Head.SIGMOID:
                    return model_predict(logits, head, thresholds).view(1, n)
                return clean_targets

            adv_maps, adv_logits, adv_targets = grad_cam(reader, adv, adv_choice, head)
            adv_pred = model_predict(adv_logits, head, thresholds)
            fooled = _changed(clean_pred, adv_pred, head)
            if fooled_first is None:
                fooled_first = fooled
            ious, shifts = [], []
            for f in range(adv_maps.shape[0]):
                ious.append(iou(clean_top[f], top_region(adv_maps[f], params.top_fraction)))
                shifts.append((centre_of_mass(adv_maps[f]) - clean_com[f]).norm(dim=1))
            shift = torch.stack(shifts, dim=1)
            out[attack_field("adv_index", key)] = index
            out[attack_field("fooled", key)] = _np(fooled, np.bool_)
            out[attack_field("adv_target", key)] = _np(adv_targets.T, np.int16)
            out[attack_field("adv_degenerate", key)] = _np(
                adv_maps.flatten(2).amax(2).T == 0, np.bool_
            )
            out[attack_field("iou", key)] = _np(torch.stack(ious, dim=1), np.float32)
            out[attack_field("com_shift_px", key)] = _np(shift, np.float32)
            out[attack_field("com_shift_fraction", key)] = _np(shift / diagonal, np.float32)
            if masks is not None:
                out[attack_field("lesion_share_adv", key)] = _np(
                    torch.stack([mass_inside(m, masks) for m in adv_maps], dim=1), np.float32
                )
            adv_keep[key] = (adv_maps[0], adv_targets[0])
        out.update(self._samples(ctx, params, clean_maps[0], clean_targets[0], fooled_first,
                                 adv_keep, index))
        return out

    def _samples(
        self,
        ctx: BatchContext,
        params: GradCAMParams,
        clean_map: Tensor,
        clean_target: Tensor,
        fooled: Tensor | None,
        adv: dict[str, tuple[Tensor, Tensor]],
        index: np.ndarray,
    ) -> dict[str, np.ndarray]:
        if params.samples_per_batch == 0:
            return {}
        n = ctx.clean.shape[0]
        order = list(range(n))
        if fooled is not None:
            # Images the first attack fooled show the shift best: they come first.
            f = fooled.cpu().numpy()
            order = [i for i in order if f[i]] + [i for i in order if not f[i]]
        pick = sorted(order[: params.samples_per_batch])
        sel = torch.tensor(pick, device=ctx.clean.device, dtype=torch.long)
        out: dict[str, np.ndarray] = {
            "sample_index": index[pick],
            "sample_image": to_uint8(_thumbnail(ctx.clean[sel])),
            "sample_cam": to_uint8(_thumbnail(clean_map[sel].unsqueeze(1))[:, 0]),
            "sample_target": _np(clean_target[sel], np.int16),
            "sample_fooled": (
                _np(fooled[sel], np.bool_) if fooled is not None else np.zeros(len(pick), bool)
            ),
        }
        for key, (amap, atarget) in adv.items():
            out[attack_field("sample_adv", key)] = to_uint8(
                _thumbnail(ctx.adversarial[key][sel])
            )
            out[attack_field("sample_adv_cam", key)] = to_uint8(
                _thumbnail(amap[sel].unsqueeze(1))[:, 0]
            )
            out[attack_field("sample_adv_target", key)] = _np(atarget[sel], np.int16)
        return out

    # ------------------------------------------------------------------ summarize

    def summarize(self, arrays: dict[str, np.ndarray], ctx: SummaryContext) -> Section:
        params = self.parse_params(ctx.params)
        reason = not_applicable_reason(arrays)
        if reason is not None:
            return Section(self.name, applicable=False, data={}, reason=reason)
        layer = read_text(arrays, "layer")
        if layer is None or "clean_target" not in arrays:
            return Section(self.name, applicable=False, data={},
                           reason="no images were analysed")
        findings = json.loads(read_text(arrays, "findings") or "null")
        image_size = json.loads(read_text(arrays, "image_size") or "null")
        rows = unique_rows(arrays["index"])
        clean: dict[str, Any] = {
            "n_images": int(rows.shape[0]),
            "degenerate_maps": int(arrays["clean_degenerate"][rows].sum()),
        }
        if "lesion_share_clean" in arrays:
            clean["lesion_share"] = nanmean(arrays["lesion_share_clean"][rows])
        attacks: dict[str, Any] = {}
        missing: list[str] = []
        for key in ctx.attack_keys:
            if attack_field("iou", key) not in arrays:
                missing.append(key)
                continue
            attacks[key] = self._attack_stats(arrays, key, findings)
        data: dict[str, Any] = {
            "method": "Grad-CAM (Selvaraju et al. 2017) at the input resolution",
            "layer": layer,
            "target": read_text(arrays, "target"),
            "findings": findings,
            "top_fraction": params.top_fraction,
            "image_size": image_size,
            "clean": clean,
            "attacks": attacks,
        }
        if missing:
            data["missing_attacks"] = missing
        figures = []
        if params.gallery_size > 0 and "sample_index" in arrays:
            for i, key in enumerate(attacks):
                kind = "finding" if ctx.task == "multi-label" else "class"
                fig = gallery_figure(arrays, key, list(ctx.labels), kind,
                                     params.gallery_size, f"gradcam_gallery_{i}")
                if fig is not None:
                    figures.append(fig)
        return Section(self.name, applicable=True, data=jsonable(data), figures=figures)

    @staticmethod
    def _attack_stats(
        arrays: dict[str, np.ndarray], key: str, findings: list[str] | None
    ) -> dict[str, Any]:
        rows = unique_rows(arrays[attack_field("adv_index", key)])

        def get(name: str) -> np.ndarray:
            return arrays[attack_field(name, key)][rows]

        fooled = get("fooled").astype(bool)
        iou_v, shift_px, shift_frac = get("iou"), get("com_shift_px"), get("com_shift_fraction")

        def block(sel: np.ndarray | slice, col: int | slice = slice(None)) -> dict[str, Any]:
            out = {
                "iou_top": nanmean(iou_v[sel, col]),
                "com_shift_px": nanmean(shift_px[sel, col]),
                "com_shift_fraction": nanmean(shift_frac[sel, col]),
            }
            if attack_field("lesion_share_adv", key) in arrays:
                out["lesion_share_adversarial"] = nanmean(get("lesion_share_adv")[sel, col])
                if "lesion_share_clean" in arrays:
                    pos = unique_rows(arrays["index"])
                    clean_index = arrays["index"][pos]
                    adv_index = arrays[attack_field("adv_index", key)][rows]
                    where = np.searchsorted(clean_index, adv_index)
                    share = arrays["lesion_share_clean"][pos][where]
                    out["lesion_share_clean"] = nanmean(share[sel, col])
            return out

        stats: dict[str, Any] = {
            "n_images": int(rows.shape[0]),
            "fooled": int(fooled.sum()),
            "fooled_rate": float(fooled.mean()) if fooled.size else float("nan"),
            "degenerate_maps": int(get("adv_degenerate").sum()),
            **block(slice(None)),
            "fooled_images": block(fooled),
            "unfooled_images": block(~fooled),
        }
        if findings:
            stats["per_finding"] = {name: block(slice(None), j) for j, name in enumerate(findings)}
        return stats


def model_predict(logits: Tensor, head: Head, thresholds: Tensor) -> Tensor:
    """Predictions in the head's label convention (indices, or 0/1 findings)."""
    return predict(logits, head, thresholds)


def _changed(a: Tensor, b: Tensor, head: Head) -> Tensor:
    if head == Head.SIGMOID:
        return (a != b).any(dim=1)
    return a != b


def _np(t: Tensor, dtype: Any) -> np.ndarray:
    return t.detach().cpu().numpy().astype(dtype)
