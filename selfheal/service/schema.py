"""The /predict request schema, built from the model's training columns (model.json `features`).

Typed and closed: numeric columns take JSON numbers only (no strings, booleans, NaN or infinity; null only for a
column model.json marks `nullable`: it had missing values in training, and the model fills them),
categorical columns take values of the type their training categories had (unseen values are scored - the model's
encoder reads them as no known category - and named in the answer's `warnings` and counted in /metrics), and
unknown or missing fields are rejected. The body is validated straight from
its JSON bytes by pydantic-core, so the check costs microseconds and never reaches the model with bad input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Optional, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)
from typing_extensions import TypedDict

_CATEGORY_TYPES = {bool: StrictBool, int: StrictInt, float: StrictFloat, str: StrictStr}


class PayloadError(Exception):
    """A request the schema refuses: `status` is the HTTP status, `errors` the per-field problems."""

    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []


class FieldError(BaseModel):
    loc: list[str | int] = Field(description='where: ["body", <record index>, <field>]')
    msg: str = Field(description="names the record and field, e.g. \"record 3: field 'MedInc': missing field\"")
    type: str


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx answer of /predict."""

    detail: list[FieldError] | str
    message: str


class PredictResponse(BaseModel):
    predictions: list[float | int | str | bool] = Field(description="one per record, in request order")
    model_version: str | None = Field(description="the registered version that scored the request (model@vX.Y.Z)")
    model_md5: str
    warnings: list[str] | None = Field(None, description="present when a value was scored as no known category")


def _category_type(feature: dict[str, Any]) -> Any:
    kinds = {type(v) for v in feature.get("categories") or []}
    types = [_CATEGORY_TYPES[k] for k in _CATEGORY_TYPES if k in kinds] or [StrictStr]
    return types[0] if len(types) == 1 else Union[tuple(types)]  # noqa: UP007 (a runtime-built union)


def _describe(exc: ValidationError, batch: bool, names: list[str]) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        where = ""
        if batch and loc and isinstance(loc[0], int):
            where = f"record {loc.pop(0)}: "
        field = str(loc[0]) if loc else None
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown field (expected only {names})"
        elif err["type"] == "missing":
            msg = "missing field"
        elif err.get("input", "") is None and field in names:  # null where the model learnt from no missing value
            msg = ("null is not accepted: the model saw no missing values in this column in training "
                   f"({err['msg'].lower()})")
        text = f"{where}field {field!r}: {msg}" if field else f"{where}{msg}"
        out.append({"loc": ["body", *err["loc"]], "msg": text, "type": err["type"]})
    return out


@dataclass(frozen=True)
class RequestSchema:
    """Validates one record (a JSON object) or a batch (a JSON array of them) into plain dicts."""

    names: list[str]
    max_batch_size: int
    record: TypeAdapter
    batch: TypeAdapter
    example: dict[str, Any]  # one valid record: smoke-tests a model before it serves
    nullable: tuple[str, ...] = ()  # numeric columns where null means missing (NaN for the model)
    categories: tuple[tuple[str, frozenset], ...] = ()  # (column, the values seen in training)

    @classmethod
    def from_features(cls, features: list[dict[str, Any]], max_batch_size: int) -> RequestSchema:
        fields = {f["name"]: _field_type(f) for f in features}
        record = TypedDict("Record", fields)  # type: ignore[misc]
        record.__pydantic_config__ = ConfigDict(  # type: ignore[attr-defined]
            extra="forbid", strict=True, allow_inf_nan=False, title="Record"
        )
        batch = Annotated[list[record], Field(min_length=1)]
        example = {f["name"]: 0.0 if f["kind"] == "numeric" else (f.get("categories") or [""])[0] for f in features}
        names = [f["name"] for f in features]
        nullable = tuple(f["name"] for f in features if f.get("nullable"))
        categories = tuple((f["name"], frozenset(f["categories"])) for f in features
                           if f["kind"] != "numeric" and f.get("categories"))
        return cls(names, max_batch_size, TypeAdapter(record), TypeAdapter(batch), example, nullable, categories)

    def unseen(self, records: list[dict[str, Any]]) -> dict[str, list[Any]]:
        """{column: the distinct values the model never saw in training}, for the columns that have any."""
        out: dict[str, list[Any]] = {}
        for name, known in self.categories:
            new = {r[name] for r in records if r[name] not in known}
            if new:
                out[name] = sorted(new, key=str)
        return out

    @property
    def max_body_bytes(self) -> int:
        return 4096 * (self.max_batch_size + 1)

    def parse(self, body: bytes) -> list[dict[str, Any]]:
        """The records of a request body, or PayloadError (422 for bad input, 413 for a too large batch)."""
        if len(body) > self.max_body_bytes:
            raise PayloadError(413, f"request body of {len(body)} bytes exceeds {self.max_body_bytes}")
        start = body.lstrip()[:1]
        batch = start == b"["
        if start not in (b"[", b"{"):
            raise PayloadError(
                422, "expected a JSON object (one record) or a JSON array of records",
                [{"loc": ["body"], "msg": "not a JSON object or array", "type": "json_invalid"}],
            )
        try:
            records = self.batch.validate_json(body) if batch else [self.record.validate_json(body)]
        except ValidationError as exc:
            errors = _describe(exc, batch, self.names)
            raise PayloadError(422, "; ".join(e["msg"] for e in errors[:5]), errors) from None
        if len(records) > self.max_batch_size:
            raise PayloadError(413, f"batch of {len(records)} records exceeds max_batch_size {self.max_batch_size}")
        for name in self.nullable:  # NaN keeps the column float even when every value is missing
            for record in records:
                if record[name] is None:
                    record[name] = math.nan
        return records

    def json_schema(self) -> dict[str, Any]:
        return {"record": self.record.json_schema(), "max_batch_size": self.max_batch_size}

    def openapi_body(self) -> dict[str, Any]:
        """The OpenAPI requestBody of POST /predict: one record or a list of 1..max_batch_size records."""
        record = self.record.json_schema()
        batch = {"type": "array", "items": record, "minItems": 1, "maxItems": self.max_batch_size,
                 "title": "Records"}
        return {
            "required": True,
            "content": {"application/json": {
                "schema": {"oneOf": [record, batch]},
                "examples": {"one record": {"value": self.example}, "a batch": {"value": [self.example] * 2}},
            }},
        }


def _field_type(feature: dict[str, Any]) -> Any:
    if feature["kind"] != "numeric":
        return _category_type(feature)
    return Optional[StrictFloat] if feature.get("nullable") else StrictFloat  # noqa: UP045 (runtime-built)

