"""Request body parsing: JSON whose text no database can store (agents_app/text.py) is a 400
naming the field, for every DRF view and the SSE consumers (which parse with the same classes).

Imported by DRF's settings (DEFAULT_PARSER_CLASSES) while `rest_framework.views` loads: it must
not import that module itself."""

from rest_framework.exceptions import ValidationError
from rest_framework.parsers import JSONParser

from ..text import REASON, unstorable


def refuse_unstorable(data, path: str = "") -> None:
    """A DRF ValidationError naming the first field whose text cannot be stored."""
    where = unstorable(data, path)
    if where:
        raise ValidationError({where: [REASON]})


class CleanJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        refuse_unstorable(data)
        return data
