"""GET /codelib: the Python libraries user code can import."""

from __future__ import annotations

from fastapi import APIRouter, Request

from codeactions.auth.dependencies import CurrentPrincipal
from codeactions.db.session import SessionDep
from codeactions.libs import service
from codeactions.libs.schemas import CodeLibOut
from codeactions.ops.docs import error_responses

router = APIRouter(tags=["codes"])


@router.get(
    "/codelib",
    summary="Python libraries available to user code",
    response_model=list[CodeLibOut],
    responses=error_responses(401, 503),
)
async def list_codelibs(
    request: Request, session: SessionDep, _principal: CurrentPrincipal
) -> list[CodeLibOut]:
    python: str = request.app.state.settings.runner.python
    return await service.list_python_libraries(session, python=python)
