"""Remote models: register an inference endpoint (Open Inference Protocol v2) with a card.
Audited with queries only; see :mod:`app.core.remote`."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.api.deps import SessionDep, SettingsDep, TenantDep
from app.api.schemas.common import ERRORS
from app.api.schemas.models import ModelPublic
from app.api.schemas.remote import RemoteModelCreate
from app.core.remote import register_remote_model

router = APIRouter(prefix="/v1/remote-models", tags=["models"], responses=ERRORS)


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=ModelPublic,
    summary="Register a remote model (an OIP v2 endpoint and a card)",
    description="The URL must be http(s), on the remote-model allow-list, and (unless "
    "allowed) resolve to public addresses only. The endpoint's metadata must match the "
    "card's input, and a dry run of two images must answer finite scores. Audits of remote "
    "models run score-based attacks (Square) and prediction-only analyses, within a query "
    "budget and rate.",
)
def post_remote_model(body: RemoteModelCreate, response: Response, session: SessionDep,
                      settings: SettingsDep, tenant: TenantDep) -> ModelPublic:
    row = register_remote_model(
        session, settings, tenant.id, url=body.url, model=body.model, version=body.version,
        card=body.card, outputs=body.outputs, token=body.bearer_token,
        input_name=body.input, output_name=body.output)
    session.commit()
    response.headers["Location"] = f"/v1/models/{row.id}"
    return ModelPublic.from_row(row)
