"""The building blocks every Dockyard kind shares: the model base, metadata, conditions.

`ApiModel` fixes the rules of the edge for all our models: camelCase field names as in every
Kubernetes API, unknown fields refused, no type coercion (`"5"` is not a number), frozen
values, field docstrings as the schema's descriptions, and CEL rules (`CelRule`) checked in
Python with the same text the API server checks.

Status types follow the Kubernetes API conventions: `observedGeneration`, `conditions[]`
(type, status, reason, message, lastTransitionTime) and a one-word `phase` for humans.

Pure data: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StrictInt,
    StringConstraints,
    ValidationInfo,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from dockyard_api import cel
from dockyard_api.fields import (
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    DnsLabel,
    Labels,
    check_labels,
)

GROUP = "dockyard.dev"
VERSION = "v1alpha1"
API_VERSION: Final = "dockyard.dev/v1alpha1"

SERVED = "dockyard.served"
"""Validation context key: the object was read from the API server, which evaluated the
CEL rules on its write (see `manifests.parse`)."""


class FieldError(ValueError):
    """A validation error about one named field of the model that raised it.

    Raised from model-level validators so that the reported path names the field
    (`spec.nodeSelector`) and not only the object that holds it (`spec`).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class CelRule:
    """A cross-field rule in CEL, exported as `x-kubernetes-validations` and checked in Python.

    `field` is the path the error is reported on, relative to the object the rule sits on
    (`nodeSelector`, or `ports` for a rule about a list); it becomes the rule's `fieldPath`.
    """

    rule: str
    message: str
    field: str = ""
    reason: str = "FieldValueInvalid"

    def schema(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message, "reason": self.reason}
        if self.field:
            out["fieldPath"] = "." + self.field
        return out


class ApiModel(BaseModel):
    """Base of every Dockyard API model (see the module docstring for the rules)."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
        use_attribute_docstrings=True,
        use_enum_values=False,
    )
    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self, info: ValidationInfo) -> Any:
        rules = type(self).cel_rules
        if rules and not (info.context and info.context.get(SERVED)):
            data = self.model_dump(mode="json", exclude_none=True)
            for rule in rules:
                if not cel.holds(rule.rule, data):
                    raise FieldError(rule.field, rule.message)
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        rules = cls.__dict__.get("cel_rules", ())
        if rules:
            target = handler.resolve_ref_schema(schema)
            target["x-kubernetes-validations"] = [rule.schema() for rule in rules]
        return schema


def unique(items: list[Any], *keys: str, what: str) -> None:
    """Refuse two items with the same key fields (a list-map in the CRD), naming the index."""
    seen: dict[tuple[Any, ...], int] = {}
    for index, item in enumerate(items):
        value = tuple(getattr(item, key) for key in keys)
        if value in seen:
            shown = ", ".join(f"{to_camel(k)}={v!s}" for k, v in zip(keys, value, strict=True))
            raise FieldError(
                f"{_camel_path(what)}[{index}]",
                f"duplicate {shown}: item {seen[value]} already uses it",
            )
        seen[value] = index


def _camel_path(name: str) -> str:
    return ".".join(to_camel(part) for part in name.split("."))


class ConditionStatus(StrEnum):
    """Whether a condition holds, as in every Kubernetes API."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


ConditionType = Annotated[
    str, StringConstraints(min_length=1, max_length=316,
                           pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$")
]
Reason = Annotated[
    str, StringConstraints(min_length=1, max_length=1024,
                           pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
]


class Condition(ApiModel):
    """One aspect of an object's state, in the Kubernetes `metav1.Condition` shape."""

    type: ConditionType
    """What this condition is about, in CamelCase: `Ready`, `Scheduled`, `PolicyViolation`."""
    status: ConditionStatus
    """Whether the condition holds: `True`, `False` or `Unknown`."""
    observed_generation: Annotated[StrictInt, Field(ge=0)] | None = None
    """The `metadata.generation` this condition was computed from."""
    last_transition_time: datetime
    """When `status` last changed (RFC 3339)."""
    reason: Reason
    """A CamelCase word for programs: why the condition is in this state."""
    message: Annotated[str, StringConstraints(max_length=32768)] = ""
    """A sentence for humans: what happened and what to do about it."""


ConditionList = Annotated[
    list[Condition],
    Field(
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]


class StatusBase(ApiModel):
    """Fields every Dockyard status carries (Kubernetes API conventions)."""

    # Status is written by our controllers; be lenient on fields a newer version adds.
    model_config = ConfigDict(extra="ignore")

    observed_generation: Annotated[StrictInt, Field(ge=0)] | None = None
    """The `metadata.generation` the controller last acted on; behind means not yet seen."""
    conditions: ConditionList = Field(default_factory=list)
    """The latest observations of the object's state, one per condition type."""

    @model_validator(mode="after")
    def _conditions_unique(self) -> StatusBase:
        unique(self.conditions, "type", what="conditions")
        return self


def _check_annotations(annotations: dict[str, str]) -> dict[str, str]:
    check_labels(annotations, values=False)
    total = sum(len(k) + len(v) for k, v in annotations.items())
    if total > 256 * 1024:
        raise ValueError(f"annotations take {total} bytes; the API server allows 262144")
    return annotations


class ObjectMeta(ApiModel):
    """The standard Kubernetes object metadata (the fields Dockyard reads or checks)."""

    name: Annotated[str, StringConstraints(max_length=253)] | None = None
    """The object's name, unique per kind and namespace."""
    generate_name: Annotated[str, StringConstraints(max_length=253)] | None = None
    """A prefix for a name the API server generates, when `name` is not given."""
    namespace: DnsLabel | None = None
    """The namespace of a namespaced object (the current one when omitted)."""
    labels: Labels = Field(default_factory=dict)
    """Key/value pairs to select and group objects."""
    annotations: Annotated[dict[str, str], AfterValidator(_check_annotations)] = Field(
        default_factory=dict)
    """Key/value pairs for tools; not used for selection."""
    # Set by the API server; accepted so that objects read back from a cluster validate.
    uid: str | None = None
    resource_version: str | None = None
    generation: StrictInt | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    deletion_grace_period_seconds: StrictInt | None = None
    finalizers: list[str] = Field(default_factory=list)
    owner_references: list[dict[str, Any]] = Field(default_factory=list)
    managed_fields: list[dict[str, Any]] = Field(default_factory=list)
    self_link: str | None = None


@dataclass(frozen=True)
class PrinterColumn:
    """A column of `kubectl get` for one kind (`additionalPrinterColumns`)."""

    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"] = "string"
    description: str = ""
    priority: int = 0  # 1 = shown only with `kubectl get -o wide`


AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date",
                    "Time since the object was created")


@dataclass(frozen=True)
class KindInfo:
    """How a kind is named and shown by the API server and kubectl."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    namespaced: bool
    columns: tuple[PrinterColumn, ...]
    name_format: Literal["label", "subdomain"] = "subdomain"
    """`label` for kinds whose name becomes a hostname or a path on a node (63 characters)."""
    categories: tuple[str, ...] = field(default=("dockyard",))

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def name_rule(self) -> CelRule:
        """The CEL rule for `metadata.name`, checked by the API server at the root."""
        if self.name_format == "label":
            return CelRule(
                f"self.metadata.name.size() <= 63 && "
                f"self.metadata.name.matches('{DNS_LABEL_PATTERN}')",
                f"a {self.kind} name must be a DNS-1123 label: at most 63 lower-case letters, "
                "digits and '-', starting and ending with a letter or digit",
                "metadata.name",
            )
        return CelRule(
            f"self.metadata.name.matches('{DNS_SUBDOMAIN_PATTERN}')",
            f"a {self.kind} name must be a DNS-1123 subdomain",
            "metadata.name",
        )


class Resource(ApiModel):
    """A whole Dockyard object: apiVersion, kind, metadata, spec and status."""

    kind_info: ClassVar[KindInfo]

    api_version: Literal["dockyard.dev/v1alpha1"] = "dockyard.dev/v1alpha1"
    """The API group and version: `dockyard.dev/v1alpha1`."""
    metadata: ObjectMeta
    """Standard object metadata."""

    @model_validator(mode="after")
    def _check_metadata(self, validation: ValidationInfo) -> Resource:
        info = type(self).kind_info
        meta = self.metadata
        if meta.name is None and meta.generate_name is None:
            raise FieldError("metadata.name", f"a {info.kind} needs metadata.name")
        served = bool(validation.context and validation.context.get(SERVED))
        if meta.name is not None and not served and not cel.holds(
            info.name_rule.rule, {"metadata": {"name": meta.name}}
        ):
            raise FieldError("metadata.name", f"{meta.name!r}: {info.name_rule.message}")
        if not info.namespaced and meta.namespace is not None:
            raise FieldError(
                "metadata.namespace",
                f"{info.kind} is cluster-scoped: remove metadata.namespace",
            )
        return self
