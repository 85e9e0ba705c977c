"""Request and response bodies of the hr endpoints (they are the OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from atrium.hr.rows import TABLE_NAMES

TableName = Literal["departments", "jobs", "hired_employees"]
assert set(TableName.__args__) == set(TABLE_NAMES)  # type: ignore[attr-defined]

DEPARTMENT_EXAMPLE: dict[str, Any] = {"id": 1, "department": "Product Management"}
JOB_EXAMPLE: dict[str, Any] = {"id": 1, "job": "Marketing Assistant"}
EMPLOYEE_EXAMPLE: dict[str, Any] = {
    "id": 1,
    "name": "Harold Vogt",
    "datetime": "2021-11-07T02:48:42Z",
    "department_id": 2,
    "job_id": 96,
}


class RejectedRow(BaseModel):
    """A row that was not stored: its 0-based index in the batch (or record number - 1 in a
    CSV file, where a quoted field may span lines) and every reason."""

    index: int = Field(ge=0)
    errors: list[str]


class BatchSummary(BaseModel):
    """Outcome of a JSON batch: how many rows came, how many were stored, which were not."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "received": 3,
                    "inserted": 2,
                    "rejected": [{"index": 1, "errors": ["department_id 99 does not exist"]}],
                }
            ]
        }
    )

    received: int = Field(ge=0)
    inserted: int = Field(ge=0, description="Rows written (inserted, or updated by an upsert).")
    rejected: list[RejectedRow]


class CsvSummary(BatchSummary):
    """Outcome of a CSV upload; ``rejected`` lists at most ``ATRIUM_HR_REJECT_LIST_CAP`` rows,
    ``rejected_count`` counts them all."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "received": 1999,
                    "inserted": 1929,
                    "rejected": [{"index": 4, "errors": ["name is empty"]}],
                    "rejected_count": 70,
                }
            ]
        }
    )

    rejected_count: int = Field(ge=0)


class Department(BaseModel):
    """A department."""

    model_config = ConfigDict(json_schema_extra={"examples": [DEPARTMENT_EXAMPLE]})

    id: int
    department: str


class Job(BaseModel):
    """A job."""

    model_config = ConfigDict(json_schema_extra={"examples": [JOB_EXAMPLE]})

    id: int
    job: str


class HiredEmployee(BaseModel):
    """A hired employee; ``datetime`` is in UTC."""

    model_config = ConfigDict(json_schema_extra={"examples": [EMPLOYEE_EXAMPLE]})

    id: int
    name: str
    datetime: datetime
    department_id: int
    job_id: int


class RowPage(BaseModel):
    """One page of a table, ordered by id."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"items": [DEPARTMENT_EXAMPLE], "total": 12, "limit": 100, "offset": 0}]
        }
    )

    items: list[Department | Job | HiredEmployee]
    total: int = Field(ge=0)
    limit: int = Field(ge=1)
    offset: int = Field(ge=0)


class QuarterHires(BaseModel):
    """Hires of one department and job in each quarter (UTC) of the year."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"department": "Accounting", "job": "Account Representative IV",
                 "Q1": 1, "Q2": 0, "Q3": 0, "Q4": 0}
            ]
        }
    )  # fmt: skip

    department: str
    job: str
    Q1: int
    Q2: int
    Q3: int
    Q4: int


class DepartmentHires(BaseModel):
    """A department that hired more than the mean of the departments that year."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"id": 8, "department": "Support", "hired": 221}]}
    )

    id: int
    department: str
    hired: int


class BackupTable(BaseModel):
    """One table's file in a backup."""

    file: str
    rows: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


BACKUP_EXAMPLE: dict[str, Any] = {
    "id": "20211107T024842Z-3fa85f64",
    "created_at": "2021-11-07T02:48:42Z",
    "format": "avro",
    "codec": "null",
    "format_version": 1,
    "tables": {
        "departments": {
            "file": "departments.avro",
            "rows": 12,
            "bytes": 612,
            "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        }
    },
}


class Backup(BaseModel):
    """A complete backup: its manifest (row counts and sha256 of every table's Avro file)."""

    model_config = ConfigDict(json_schema_extra={"examples": [BACKUP_EXAMPLE]})

    id: str
    created_at: datetime
    format: Literal["avro"] = "avro"
    codec: str
    format_version: int = Field(ge=1, description="Layout of the backup; restores check it.")
    tables: dict[str, BackupTable]


class BackupPage(BaseModel):
    """Backups, newest first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"items": [BACKUP_EXAMPLE], "total": 1, "limit": 100, "offset": 0}]
        }
    )

    items: list[Backup]
    total: int = Field(ge=0)
    limit: int = Field(ge=1)
    offset: int = Field(ge=0)


class RestoreRequest(BaseModel):
    """Which tables to restore (all when omitted)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"tables": ["hired_employees"]}]}
    )

    tables: Annotated[list[TableName], Field(min_length=1, max_length=3)] | None = None


class RestoreResult(BaseModel):
    """Rows now in each restored table."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "backup": "20211107T024842Z-3fa85f64",
                    "restored": {"departments": 12, "jobs": 183, "hired_employees": 1929},
                }
            ]
        }
    )

    backup: str
    restored: dict[str, int]
