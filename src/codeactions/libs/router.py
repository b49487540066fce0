"""GET /codelib: the Python libraries user code can import."""

from __future__ import annotations

from fastapi import APIRouter

from codeactions.auth.dependencies import CurrentPrincipal
from codeactions.db.session import SessionDep
from codeactions.libs import service
from codeactions.libs.schemas import CodeLibOut
from codeactions.ops.docs import error_responses
from codeactions.parts import SettingsDep

router = APIRouter(tags=["codes"])


@router.get(
    "/codelib",
    summary="Python libraries available to user code",
    response_model=list[CodeLibOut],
    responses=error_responses(401, 503),
)
async def list_codelibs(
    session: SessionDep, settings: SettingsDep, _principal: CurrentPrincipal
) -> list[CodeLibOut]:
    return await service.list_python_libraries(session, python=settings.runner.python)
