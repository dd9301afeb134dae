"""The /predict request schema, built from the model's training columns (model.json `features`).

Typed and closed: numeric columns take JSON numbers only (no strings, booleans, null, NaN or infinity),
categorical columns take values of the type their training categories had (unseen values are allowed: the
model's encoder tolerates them), and unknown or missing fields are rejected. The body is validated straight from
its JSON bytes by pydantic-core, so the check costs microseconds and never reaches the model with bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter, ValidationError
from typing_extensions import TypedDict

_CATEGORY_TYPES = {bool: StrictBool, int: StrictInt, float: StrictFloat, str: StrictStr}


class PayloadError(Exception):
    """A request the schema refuses: `status` is the HTTP status, `errors` the per-field problems."""

    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []


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

    @classmethod
    def from_features(cls, features: list[dict[str, Any]], max_batch_size: int) -> RequestSchema:
        fields = {
            f["name"]: StrictFloat if f["kind"] == "numeric" else _category_type(f) for f in features
        }
        record = TypedDict("Record", fields)  # type: ignore[misc]
        record.__pydantic_config__ = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)  # type: ignore[attr-defined]
        batch = Annotated[list[record], Field(min_length=1)]
        example = {f["name"]: 0.0 if f["kind"] == "numeric" else (f.get("categories") or [""])[0] for f in features}
        names = [f["name"] for f in features]
        return cls(names, max_batch_size, TypeAdapter(record), TypeAdapter(batch), example)

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
        return records

    def json_schema(self) -> dict[str, Any]:
        return {"record": self.record.json_schema(), "max_batch_size": self.max_batch_size}

