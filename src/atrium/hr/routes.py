"""HTTP endpoints of the hr domain (thin: parse, call the service, shape the response)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from atrium.hr import backup, reports, service
from atrium.hr.schemas import (
    EMPLOYEE_EXAMPLE,
    Backup,
    BackupPage,
    BatchSummary,
    CsvSummary,
    DepartmentHires,
    QuarterHires,
    RejectedRow,
    RestoreRequest,
    RestoreResult,
    RowPage,
)
from atrium.hr.summary import IngestResult
from atrium.hr.uploads import csv_stream, json_rows
from atrium.platform.db import EngineDep, SessionDep, SettingsDep
from atrium.platform.errors import problem_responses


class _AllowEveryMethodRoute(APIRoute):
    """A 405 lists every method the path supports (Starlette lists only the first route's,
    so ``OPTIONS /hr/backups`` would claim ``Allow: GET`` although POST exists too)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, or answer 405 with the union of the path's methods."""
        if self.methods and scope["method"] not in self.methods:
            # Only this router's routes can share a path under /hr.
            allowed: set[str] = set()
            for route in router.routes:
                if isinstance(route, APIRoute) and route.matches(scope)[0] != Match.NONE:
                    allowed |= route.methods or set()
            raise HTTPException(405, headers={"Allow": ", ".join(sorted(allowed))})
        await super().handle(scope, receive, send)


router = APIRouter(prefix="/hr", tags=["hr"], route_class=_AllowEveryMethodRoute)

TablePath = Annotated[
    str,
    Path(
        description="`departments`, `jobs` or `hired_employees` (anything else: 404).",
        examples=["hired_employees"],
    ),
]
OnConflict = Annotated[
    Literal["reject", "update"],
    Query(
        description="`reject` (default): a row whose id exists is rejected with a reason, so "
        "retrying a batch stores nothing twice. `update`: such rows are overwritten (upsert)."
    ),
]
Year = Annotated[int, Query(ge=1900, le=2100, description="Calendar year (UTC).")]
Format = Annotated[Literal["json", "csv"], Query(description="`csv`: text/csv with a header row.")]
BackupId = Annotated[
    str,
    Path(pattern=backup.ID_PATTERN, examples=["20211107T024842Z-3fa85f64"]),
]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size (at most 1000).")]
Offset = Annotated[int, Query(ge=0, le=2_147_483_647, description="Rows to skip.")]

BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "1 to 1000 row objects with the table's columns.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1000,
                    "items": {"type": "object", "additionalProperties": True},
                },
                "example": [EMPLOYEE_EXAMPLE],
            }
        },
    }
}
CSV_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The CSV file, no header row (UTF-8, BOM and CRLF accepted): as the "
        "raw body, or as the `file` field of a multipart form. Streamed: any size.",
        "content": {
            "text/csv": {
                # "binary": the body is bytes as they come; nothing to validate as a JSON type.
                "schema": {"type": "string", "format": "binary"},
                "example": "1,Harold Vogt,2021-11-07T02:48:42Z,2,96\n"
                "2,Ty Hazelton,2021-05-30T05:43:46Z,8,\n",
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}


def _rejected(result: IngestResult) -> list[RejectedRow]:
    return [RejectedRow(index=r.index, errors=r.errors) for r in result.rejected]


# Fixed paths come before /hr/{table}, which would otherwise swallow /hr/backups.
@router.get("/backups", summary="List backups")
async def list_backups(settings: SettingsDep, limit: Limit = 100, offset: Offset = 0) -> BackupPage:
    """Complete backups (with a manifest), newest first."""
    found = await backup.list_backups(service.backup_store(settings))
    return BackupPage(
        items=found[offset : offset + limit], total=len(found), limit=limit, offset=offset
    )


@router.post(
    "/backups",
    status_code=201,
    summary="Back up every HR table to Avro",
    responses=problem_responses(503),
)
async def create_backup(engine: EngineDep, settings: SettingsDep, response: Response) -> Backup:
    """Write each table to an Avro file from one consistent snapshot, then the manifest."""
    manifest = await backup.create_backup(engine, service.backup_store(settings))
    response.headers["Location"] = f"/hr/backups/{manifest.id}"
    return manifest


@router.get("/backups/{backup_id}", summary="Show a backup", responses=problem_responses(404, 409))
async def get_backup(backup_id: BackupId, settings: SettingsDep) -> Backup:
    """The manifest of one backup: row counts, sizes and sha256 of its files."""
    return await backup.get_backup(service.backup_store(settings), backup_id)


@router.post(
    "/backups/{backup_id}/restore",
    summary="Restore tables from a backup",
    responses=problem_responses(404, 409),
)
async def restore_backup(
    backup_id: BackupId,
    engine: EngineDep,
    settings: SettingsDep,
    body: Annotated[RestoreRequest | None, Body()] = None,
) -> RestoreResult:
    """Replace the tables' contents (all three by default) in one transaction.

    Every file is checked against the manifest's sha256 first; a damaged backup is refused
    (409) before anything changes. A restore that would break a foreign key (employees
    naming departments or jobs that would not exist) is refused with 409 and changes nothing.
    """
    tables = body.tables if body is not None else None
    counts = await backup.restore_backup(engine, service.backup_store(settings), backup_id, tables)
    return RestoreResult(backup=backup_id, restored=counts)


def _report_response(rows: list[dict[str, Any]], columns: tuple[str, ...], fmt: str) -> Any:
    if fmt == "csv":
        return Response(reports.to_csv(rows, columns), media_type="text/csv; charset=utf-8")
    return rows


@router.get(
    "/reports/hires-by-quarter",
    summary="Hires per department and job, by quarter",
    response_model=list[QuarterHires],
    responses={
        200: {
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "department,job,Q1,Q2,Q3,Q4\n"
                    "Accounting,Account Representative IV,1,0,0,0\n",
                }
            }
        }
    },
)
async def hires_by_quarter(session: SessionDep, year: Year = 2021, format: Format = "json") -> Any:
    """Hires in each quarter (UTC) of the year, per department and job that hired that year,
    ordered by department then job (Unicode code point order)."""
    rows = await reports.hires_by_quarter(session, year)
    return _report_response(rows, reports.QUARTER_COLUMNS, format)


@router.get(
    "/reports/departments-above-mean",
    summary="Departments hiring above the mean",
    response_model=list[DepartmentHires],
    responses={
        200: {
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "id,department,hired\n8,Support,221\n",
                }
            }
        }
    },
)
async def departments_above_mean(
    session: SessionDep, year: Year = 2021, format: Format = "json"
) -> Any:
    """Departments that hired more employees in the year than the mean, most hires first
    (ties by id). The mean is over the departments that hired at least once that year."""
    rows = await reports.departments_above_mean(session, year)
    return _report_response(rows, reports.ABOVE_MEAN_COLUMNS, format)


@router.post(
    "/{table}/batch",
    summary="Insert a batch of rows",
    openapi_extra=BATCH_BODY,
    responses=problem_responses(404, 415),
)
async def insert_batch(
    table: TablePath, request: Request, session: SessionDep, on_conflict: OnConflict = "reject"
) -> BatchSummary:
    """Validate every row; store the valid ones, reject (and log) the others with reasons.

    Checked: column names and types, required non-blank values, 32-bit ids, ISO 8601
    date-times, that the department and job exist, and duplicate ids (in the table or the
    batch). The answer is 200 whenever the batch itself was readable, rejects included.
    """
    rows, body = await json_rows(request)
    spec = service.table_spec(table)
    result = await service.store_batch(
        session, spec, rows, update=on_conflict == "update", body=body
    )
    return BatchSummary(
        received=result.received, inserted=result.inserted, rejected=_rejected(result)
    )


@router.post(
    "/{table}/csv",
    summary="Load a CSV file",
    openapi_extra=CSV_BODY,
    responses=problem_responses(404, 409, 413, 415),
)
async def load_csv(
    table: TablePath,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    on_conflict: OnConflict = "reject",
) -> CsvSummary:
    """Stream a CSV file (no header row) into the table in one transaction; memory stays flat
    whatever its size. Rows with an empty field or a bad value are rejected and logged."""
    spec = service.table_spec(table)
    source = csv_stream(request.headers.get("content-type"), request.stream())
    result = await service.store_csv(
        session,
        spec,
        source,
        update=on_conflict == "update",
        reject_cap=settings.hr_reject_list_cap,
    )
    return CsvSummary(
        received=result.received,
        inserted=result.inserted,
        rejected=_rejected(result),
        rejected_count=result.rejected_count,
    )


@router.get("/{table}", summary="List a table's rows", responses=problem_responses(404))
async def list_rows(
    table: TablePath, session: SessionDep, limit: Limit = 100, offset: Offset = 0
) -> RowPage:
    """Rows ordered by id, a page at a time, with the table's total row count."""
    spec = service.table_spec(table)
    items, total = await service.list_rows(session, spec, limit=limit, offset=offset)
    return RowPage.model_validate(
        {"items": items, "total": total, "limit": limit, "offset": offset}
    )
