"""Query strings and paths with text that cannot be stored (agents_app/text.py) are a 400 naming
the parameter (or `path`), before any view filters by it. (JSON bodies and socket messages:
parsers.py.)"""

from asgiref.sync import iscoroutinefunction
from django.http import JsonResponse
from django.utils.decorators import sync_and_async_middleware

from ..text import problem
from .errors import error_body


def _refusal(request) -> JsonResponse | None:
    found = problem({"path": request.path, **{key: request.GET.getlist(key) for key in request.GET}})
    if found is None:
        return None
    field, reason = found[0].split(".", 1)[0], found[1]
    return JsonResponse(error_body("invalid", f"{field}: {reason}", fields={field: [reason]}), status=400)


@sync_and_async_middleware
def clean_query_middleware(get_response):
    """A path or query parameter with unstorable text is a 400 before any view filters by it (async
    under ASGI: a sync-only middleware would cost every request a trip to a thread)."""
    if iscoroutinefunction(get_response):

        async def middleware(request):
            return _refusal(request) or await get_response(request)

    else:

        def middleware(request):
            return _refusal(request) or get_response(request)

    return middleware
