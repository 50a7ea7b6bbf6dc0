"""Typed field tables: one description of a YAML document that both checks it and prints its JSON Schema.

A table is built from a few node types (Text, Integer, Number, Flag, Seq, Record, Table, OneKey,
Scalar, Free). ``node.check(value, where)`` returns the value (a Record with its defaults filled
in) or raises FieldError naming the field and what would be accepted; ``node.schema()`` is the
same node as JSON Schema (draft 2020-12). The loader and the published schema are therefore one
table and cannot drift. Rules that need more than one field, the file system or the manifests
are the loader's (harness.scenario); a Record may carry ``Implies`` rules, which both sides know.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

DRAFT = "https://json-schema.org/draft/2020-12/schema"
REQUIRED: Any = object()  # a Slot without a default


class FieldError(Exception):
    """One field that does not fit: where it is (dotted, with [i] for list items) and what would be accepted."""

    def __init__(self, where: str, expected: str) -> None:
        super().__init__(f"field '{where or '(top level)'}': expected {expected}")
        self.where = where or "(top level)"
        self.expected = expected


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _got(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


class Node:
    """One kind of value; subclasses define check() and schema()."""

    doc: str = ""

    def check(self, value: Any, where: str) -> Any:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def _described(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {"description": self.doc, **schema} if self.doc else schema


@dataclass(frozen=True)
class Text(Node):
    """A non-empty string, optionally one of choices, matching a pattern, or passing a check."""

    doc: str = ""
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    expected: str = "a non-empty string"
    verify: Callable[[str], str | None] | None = None  # returns what would be accepted, or None if fine
    allow_empty: bool = False
    hint: str = ""  # said after the choices: why only these
    reserved: Mapping[str, str] | None = None  # values refused with a reason of their own (not in choices)

    def check(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise FieldError(where, f"{self._expected()}, got {_got(value)}")
        if not value and not self.allow_empty:
            raise FieldError(where, f"{self._expected()}, got an empty string")
        if self.reserved and value in self.reserved:
            raise FieldError(where, f"{self._expected()} ({value} is reserved: {self.reserved[value]})")
        if self.choices and value not in self.choices:
            raise FieldError(where, f"{self._expected()}, got {value!r}")
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise FieldError(where, f"{self.expected}, got {value!r}")
        if self.verify is not None:
            problem = self.verify(value)
            if problem is not None:
                raise FieldError(where, problem)
        return value

    def _expected(self) -> str:
        if not self.choices:
            return self.expected
        return f"one of {list(self.choices)}" + (f" ({self.hint})" if self.hint else "")

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string"}
        if not self.allow_empty:
            out["minLength"] = 1
        if self.choices:
            out["enum"] = list(self.choices)
        if self.pattern:
            out["pattern"] = f"^(?:{self.pattern})$"
        return self._described(out)


@dataclass(frozen=True)
class Integer(Node):
    doc: str = ""
    minimum: int | None = None
    maximum: int | None = None
    expected: str = "an integer"

    def check(self, value: Any, where: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise FieldError(where, f"{self._expected()}, got {_got(value)}")
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise FieldError(where, f"{self._expected()}, got {value}")
        return value

    def _expected(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"{self.expected} from {self.minimum} to {self.maximum}"
        if self.minimum is not None:
            return f"{self.expected} of at least {self.minimum}"
        return self.expected

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer"}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return self._described(out)


@dataclass(frozen=True)
class Number(Node):
    """A number greater than zero (seconds)."""

    doc: str = ""
    expected: str = "a positive number of seconds"

    def check(self, value: Any, where: str) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            raise FieldError(where, f"{self.expected}, got {_got(value)}")
        return float(value)

    def schema(self) -> dict[str, Any]:
        return self._described({"type": "number", "exclusiveMinimum": 0})


@dataclass(frozen=True)
class Flag(Node):
    """true or false; with only_true, a flag that must be written as true (a step that does something)."""

    doc: str = ""
    only_true: bool = False

    def check(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise FieldError(where, f"{'true' if self.only_true else 'true or false'}, got {_got(value)}")
        if self.only_true and not value:
            raise FieldError(where, "true (leave the step out rather than writing false)")
        return value

    def schema(self) -> dict[str, Any]:
        return self._described({"const": True} if self.only_true else {"type": "boolean"})


@dataclass(frozen=True)
class Scalar(Node):
    """A string (empty allowed) or a number, passed on as text (build arguments)."""

    doc: str = ""

    def check(self, value: Any, where: str) -> str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise FieldError(where, f"a string or a number, got {_got(value)}")
        return str(value)

    def schema(self) -> dict[str, Any]:
        return self._described({"type": ["string", "number"]})


@dataclass(frozen=True)
class Free(Node):
    """Any mapping, checked by whoever uses it (a patch merged into a Kubernetes object)."""

    doc: str = ""

    def check(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise FieldError(where, f"a mapping, got {_got(value)}")
        return value

    def schema(self) -> dict[str, Any]:
        return self._described({"type": "object"})


@dataclass(frozen=True)
class Seq(Node):
    item: Node
    doc: str = ""
    min_items: int = 0

    def check(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise FieldError(where, f"a list, got {_got(value)}")
        if len(value) < self.min_items:
            raise FieldError(where, f"a list of at least {self.min_items} item(s), got {len(value)}")
        return [self.item.check(v, f"{where}[{i}]") for i, v in enumerate(value)]

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "array", "items": self.item.schema()}
        if self.min_items:
            out["minItems"] = self.min_items
        return self._described(out)


@dataclass(frozen=True)
class Slot:
    """A field of a Record: its node and its default (REQUIRED: none, the field must be given)."""

    node: Node
    default: Any = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Implies:
    """When field `when` has value `is_`, field `then` must have value `must` (both sides check it)."""

    when: str
    is_: Any
    then: str
    must: Any

    def check(self, data: Mapping[str, Any], where: str) -> None:
        if data.get(self.when) == self.is_ and data.get(self.then) != self.must:
            raise FieldError(
                _join(where, self.when),
                f"{self.when}: {_yaml(self.is_)} only with {self.then}: {_yaml(self.must)}, "
                f"got {self.then}: {_yaml(data.get(self.then))}",
            )

    def schema(self) -> dict[str, Any]:
        return {
            "if": {"properties": {self.when: {"const": self.is_}}, "required": [self.when]},
            "then": {"properties": {self.then: {"const": self.must}}, "required": [self.then]},
        }


@dataclass(frozen=True)
class Excludes:
    """When field `when` has value `is_`, field `then` must not have value `not_` (because `reason`)."""

    when: str
    is_: Any
    then: str
    not_: Any
    reason: str = ""

    def check(self, data: Mapping[str, Any], where: str) -> None:
        if data.get(self.when) == self.is_ and data.get(self.then) == self.not_:
            because = f" ({self.reason})" if self.reason else ""
            raise FieldError(
                _join(where, self.then),
                f"not {self.then}: {_yaml(self.not_)} with {self.when}: {_yaml(self.is_)}{because}",
            )

    def schema(self) -> dict[str, Any]:
        return {
            "if": {"properties": {self.when: {"const": self.is_}}, "required": [self.when]},
            "then": {"not": {"properties": {self.then: {"const": self.not_}}, "required": [self.then]}},
        }


def _yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class Record(Node):
    """A mapping with known fields; unknown fields are refused, missing ones get their defaults."""

    fields: Mapping[str, Slot]
    doc: str = ""
    rules: tuple[Implies | Excludes, ...] = ()
    exclusive: tuple[tuple[str, str], ...] = ()  # pairs of fields that cannot both be given
    extensions: bool = False  # fields named x-... are allowed and ignored (a place for YAML anchors)

    def check(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise FieldError(where, f"a mapping, got {_got(value)}")
        given = {k for k in value if not (self.extensions and isinstance(k, str) and k.startswith("x-"))}
        unknown = sorted(given - set(self.fields), key=str)
        if unknown:
            raise FieldError(_join(where, str(unknown[0])), f"one of {sorted(self.fields)} (unknown field)")
        for first, second in self.exclusive:
            if first in value and second in value:
                raise FieldError(_join(where, second), f"either {first} or {second}, not both")
        out: dict[str, Any] = {}
        for key, slot in self.fields.items():
            at = _join(where, key)
            if key in value:
                out[key] = slot.node.check(value[key], at)
            elif slot.required:
                raise FieldError(at, f"{_phrase(slot.node)} (it is required)")
            else:
                out[key] = slot.default
        for rule in self.rules:
            rule.check(out, where)
        return out

    def schema(self) -> dict[str, Any]:
        properties = {}
        for key, slot in self.fields.items():
            node_schema = slot.node.schema()
            if not slot.required and slot.default is not None:
                node_schema["default"] = slot.default
            properties[key] = node_schema
        out: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        if self.extensions:
            out["patternProperties"] = {"^x-": {}}
        required = [key for key, slot in self.fields.items() if slot.required]
        if required:
            out["required"] = required
        conditions = [rule.schema() for rule in self.rules]
        conditions += [{"not": {"required": [a, b]}} for a, b in self.exclusive]
        if conditions:
            out["allOf"] = conditions
        return self._described(out)


@dataclass(frozen=True)
class Table(Node):
    """A mapping from names (matching key_pattern) to values of one node."""

    value: Node
    doc: str = ""
    key_pattern: str = ".+"
    key_expected: str = "a name"
    min_items: int = 0
    what: str = "entry"

    def check(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise FieldError(where, f"a mapping, got {_got(value)}")
        if len(value) < self.min_items:
            raise FieldError(where, f"at least {self.min_items} {self.what}")
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) or not re.fullmatch(self.key_pattern, key):
                raise FieldError(_join(where, str(key)), f"{self.key_expected} as the key")
            out[key] = self.value.check(item, _join(where, key))
        return out

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "object",
            "propertyNames": {"pattern": f"^(?:{self.key_pattern})$"},
            "additionalProperties": self.value.schema(),
        }
        if self.min_items:
            out["minProperties"] = self.min_items
        return self._described(out)


@dataclass(frozen=True)
class OneKey(Node):
    """A mapping of exactly one of the options to its value, e.g. {restartsAtLeast: 2}; checks to (key, value)."""

    options: Mapping[str, Node]
    what: str = "item"
    example: str = ""
    doc: str = ""

    def check(self, value: Any, where: str) -> tuple[str, Any]:
        if not isinstance(value, dict) or len(value) != 1:
            example = f", e.g. {self.example}" if self.example else ""
            raise FieldError(where, f"one of {sorted(self.options)} with its value{example}, got {_got(value)}")
        key, item = next(iter(value.items()))
        if key not in self.options:
            raise FieldError(_join(where, str(key)), f"one of {sorted(self.options)} (unknown {self.what})")
        return key, self.options[key].check(item, _join(where, key))

    def schema(self) -> dict[str, Any]:
        return self._described(
            {
                "type": "object",
                "properties": {key: node.schema() for key, node in self.options.items()},
                "additionalProperties": False,
                "minProperties": 1,
                "maxProperties": 1,
            }
        )


def _phrase(node: Node) -> str:
    """What a missing field would have to be, in words."""
    if isinstance(node, Text):
        return node._expected()
    if isinstance(node, Integer):
        return node._expected()
    if isinstance(node, Number):
        return node.expected
    if isinstance(node, Flag):
        return "true or false"
    if isinstance(node, Seq):
        return "a list"
    if isinstance(node, Record | Table | Free):
        return "a mapping"
    return "a value"


def python_type(node: Node) -> type:
    """The Python type a node checks to (str, int, float, bool, list or dict)."""
    for kinds, result in (
        ((Text, Scalar), str),
        ((Integer,), int),
        ((Number,), float),
        ((Flag,), bool),
        ((Seq,), list),
    ):
        if isinstance(node, kinds):
            return result
    return dict


def document_schema(root: Node, *, title: str, schema_id: str) -> dict[str, Any]:
    """The root node as a complete JSON Schema document."""
    return {"$schema": DRAFT, "$id": schema_id, "title": title, **root.schema()}
