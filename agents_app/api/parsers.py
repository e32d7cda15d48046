"""JSON in: one parser for request bodies (every DRF view, and the SSE consumers, which parse with
the same classes) and socket messages. Malformed JSON, or nesting deeper than Python's parser
takes, is a 400 `parse_error`; JSON that cannot be stored (agents_app/text.py: NUL, lone
surrogates, numbers that overflow, nesting deeper than JSON_MAX_DEPTH) is a 400 naming the field.

Imported by DRF's settings (DEFAULT_PARSER_CLASSES) while `rest_framework.views` loads: it must
not import that module itself."""

import json
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser

from ..text import problem, too_deep


def refuse_problem(data: Any, path: str = "") -> None:
    """A DRF ValidationError naming the first field that cannot be stored."""
    found = problem(data, path)
    if found:
        where, reason = found
        raise ValidationError({where: [reason]})


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text: str | bytes) -> Any:
    """A JSON document, checked (see the module's docstring)."""
    try:
        data = json.loads(text, parse_constant=_constant)
    except RecursionError:
        raise ParseError(f"JSON parse error - the document {too_deep()}") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise ParseError(f"JSON parse error - {exc}") from None
    refuse_problem(data)
    return data


class CleanJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        return parse_json(text)
