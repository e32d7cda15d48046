"""Structured output for the offline model: a composer registered for the type, else a schema instance."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Distinct angles so array items and sibling fields do not all say the same thing.
_ASPECTS = (
    "overview",
    "key facts",
    "recent developments",
    "practical examples",
    "common questions",
    "open problems",
    "history",
    "comparisons",
)
_MAX_DEPTH = 8


@dataclass(frozen=True)
class OfflineRequest:
    """What a structured-output composer sees of one model call."""

    system_instructions: str
    items: list[dict[str, Any]]
    user_text: str
    tool_names: list[str] = field(default_factory=list)


Composer = Callable[[OfflineRequest], Any]
_composers: dict[str, Composer] = {}


def register_structured_composer(type_name: str, fn: Composer) -> None:
    """Use `fn(request) -> dict` for outputs whose `AgentOutputSchema.name()` equals `type_name`."""
    _composers[type_name] = fn


def unregister_structured_composer(type_name: str) -> None:
    _composers.pop(type_name, None)


def get_structured_composer(type_name: str) -> Composer | None:
    return _composers.get(type_name)


def schema_instance(schema: dict[str, Any], topic: str) -> Any:
    """Return a value valid for `schema` whose strings talk about `topic`."""
    return _Generator(schema, topic or "the question").value(schema, name="", index=0, depth=0)


class _Generator:
    def __init__(self, root: dict[str, Any], topic: str):
        self.root = root
        self.topic = " ".join(topic.split())[:120].rstrip(" ?.!")

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in schema and seen < 32:
            ref = schema["$ref"]
            target: Any = self.root
            for part in ref.lstrip("#/").split("/"):
                if part:
                    target = target[part.replace("~1", "/").replace("~0", "~")]
            # Sibling keywords next to $ref (e.g. a description) are kept; the target wins on conflict.
            schema = {**{k: v for k, v in schema.items() if k != "$ref"}, **target}
            seen += 1
        return schema

    def value(self, schema: Any, *, name: str, index: int, depth: int) -> Any:
        if schema is True or not isinstance(schema, dict):
            return self.string({}, name, index)
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][0]
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                return self.value(self.pick_variant(schema[key], depth), name=name, index=index, depth=depth)
        if schema.get("allOf"):
            return self.value(self.merge(schema), name=name, index=index, depth=depth)

        kind = schema.get("type")
        if isinstance(kind, list):
            non_null = [t for t in kind if t != "null"]
            if "null" in kind and (not non_null or depth >= _MAX_DEPTH):
                return None
            kind = non_null[0]
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"

        if kind == "object":
            return self.object(schema, index, depth)
        if kind == "array":
            return self.array(schema, name, depth)
        if kind == "string":
            return self.string(schema, name, index)
        if kind in ("integer", "number"):
            return self.number(schema, integer=kind == "integer", index=index)
        if kind == "boolean":
            return True
        return None

    def pick_variant(self, variants: list[Any], depth: int) -> Any:
        resolved = [self.resolve(v) if isinstance(v, dict) else v for v in variants]
        nulls = [v for v in resolved if isinstance(v, dict) and v.get("type") == "null"]
        others = [v for v in resolved if v not in nulls]
        # Deep in a recursive schema, null is the only choice guaranteed to terminate.
        if nulls and (depth >= _MAX_DEPTH or not others):
            return nulls[0]
        return others[0]

    def merge(self, schema: dict[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = self.resolve(part)
            for key, val in part.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **val}
                elif key == "required":
                    merged["required"] = sorted({*merged.get("required", []), *val})
                else:
                    merged.setdefault(key, val)
        return merged

    def object(self, schema: dict[str, Any], index: int, depth: int) -> dict[str, Any]:
        # Fields take the object's own position, so the third list item's title differs from the first's.
        properties = schema.get("properties", {})
        return {
            prop: self.value(sub, name=prop, index=index, depth=depth + 1) for prop, sub in properties.items()
        }

    def array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        low = schema.get("minItems", 0)
        high = schema.get("maxItems", max(low, 3))
        # Fewer items deeper down keeps recursive schemas (trees) small.
        wanted = 3 if depth <= 3 else 1 if depth <= 6 else 0
        count = max(low, min(high, wanted))
        items = schema.get("items", {})
        if isinstance(schema.get("prefixItems"), list):
            prefix = schema["prefixItems"]
            return [self.value(s, name=name, index=i, depth=depth + 1) for i, s in enumerate(prefix)]
        singular = name[:-1] if name.endswith("s") else name
        values = [self.value(items, name=singular, index=i, depth=depth + 1) for i in range(count)]
        if schema.get("uniqueItems"):
            values = list({repr(v): v for v in values}.values())
        return values

    def number(self, schema: dict[str, Any], *, integer: bool, index: int) -> int | float:
        step = 1 if integer else 0.5
        low = schema.get("minimum")
        if "exclusiveMinimum" in schema:
            low = schema["exclusiveMinimum"] + step
        high = schema.get("maximum")
        if "exclusiveMaximum" in schema:
            high = schema["exclusiveMaximum"] - step
        value: float = index + 1
        if low is not None and high is not None:
            value = low + (high - low) / 2
        elif low is not None:
            value = max(value, low)
        elif high is not None:
            value = min(value, high)
        multiple = schema.get("multipleOf")
        if multiple:
            value = math.ceil(value / multiple) * multiple
        return math.ceil(value) if integer else float(value)

    def string(self, schema: dict[str, Any], name: str, index: int) -> str:
        fmt = schema.get("format")
        if fmt == "date-time":
            return "2025-01-01T12:00:00Z"
        if fmt == "date":
            return "2025-01-01"
        if fmt == "time":
            return "12:00:00"
        if fmt == "email":
            return "user@example.com"
        if fmt == "uuid":
            return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.topic}/{name}/{index}"))
        if fmt in ("uri", "url") or name.lower() in ("url", "link", "href"):
            return f"https://example.com/{_slug(self.topic)}/{index + 1}"
        text = self.text_for(name, index)
        while len(text) < schema.get("minLength", 0):
            text = f"{text} {text}"
        if schema.get("maxLength") is not None:
            text = text[: schema["maxLength"]]
        return text

    def text_for(self, name: str, index: int) -> str:
        key = name.lower()
        topic = self.topic
        aspect = _ASPECTS[index % len(_ASPECTS)]
        if any(word in key for word in ("query", "search", "term", "keyword")):
            return f"{topic} {aspect}" if index else topic
        if any(word in key for word in ("reason", "why", "rationale", "purpose")):
            return f"To cover the {aspect} of {topic}."
        if any(word in key for word in ("question", "follow")):
            return f"What are the {aspect} of {topic}?"
        if any(word in key for word in ("markdown", "report", "body", "content", "article")):
            return (
                f"# {topic[:1].upper()}{topic[1:]}\n\n"
                f"## Overview\n\nThis report looks at {topic}.\n\n"
                f"## Key facts\n\n- {topic}: {aspect}\n\n## Conclusion\n\nA short answer about {topic}."
            )
        if any(word in key for word in ("summary", "description", "answer", "text", "explanation")):
            return f"A concise summary of {topic}, focusing on {aspect}."
        if any(word in key for word in ("title", "heading", "name", "label")):
            return f"{topic[:1].upper()}{topic[1:60]}" + (f" ({aspect})" if index else "")
        human = name.replace("_", " ").strip() or "answer"
        return f"{human[:1].upper()}{human[1:]} for {topic}" + (f" ({aspect})" if index else "")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "item"
