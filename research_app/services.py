"""Write paths of the research app: adding documents, loading them from files, starting research runs."""

from pathlib import Path

from django.conf import settings
from django.db import transaction

from agents_app.errors import ServiceError
from agents_app.registry import get_spec
from agents_app.runs.start import RunRequest, start_run
from agents_app.text import REASON, UNSTORABLE, blank

from .models import Document
from .pipeline import report_for_run

DOCUMENT_SUFFIXES = (".md", ".markdown", ".txt")
CORPUS_DIR = Path(__file__).resolve().parent / "corpus"


class NotShared(ServiceError):
    status = 403
    code = "permission_denied"


class DocumentTooLarge(ServiceError):
    status = 413
    code = "too_large"


class UnsupportedFileType(ServiceError):
    status = 415
    code = "unsupported_file_type"


def query_validate(query: object) -> str:
    if not isinstance(query, str) or blank(query):
        raise ServiceError("query must be a non-empty string", field="query")
    if UNSTORABLE.search(query):
        raise ServiceError(f"query {REASON}", field="query")
    limit = settings.RESEARCH_MAX_QUERY_CHARS
    if len(query) > limit:
        raise ServiceError(f"query is longer than {limit} characters", field="query", max_chars=limit)
    return " ".join(query.split())


def title_from(body: str, fallback: str) -> str:
    """The first markdown heading, else the fallback (usually the file name)."""
    for line in body.splitlines():
        if line.startswith("# "):
            return line[2:].strip()[:300]
    return fallback[:300]


def document_validate(title: str, body: str, source: str) -> tuple[str, str, str]:
    limit = settings.RESEARCH_MAX_DOCUMENT_BYTES
    size = len(body.encode("utf-8"))
    if size > limit:
        raise DocumentTooLarge(f"document is {size} bytes, more than the limit of {limit}", max_bytes=limit)
    if blank(body):
        raise ServiceError("body must not be empty", field="body")
    for field, text in (("title", title), ("body", body), ("source", source)):
        if UNSTORABLE.search(text):
            raise ServiceError(f"{field} {REASON}", field=field)
    # No title and no heading: the body's first words name it.
    title = " ".join(title.split()) or title_from(body, "") or " ".join(body.split())[:80]
    if len(title) > 300:
        raise ServiceError("title is longer than 300 characters", field="title")
    if len(source) > 500:
        raise ServiceError("source is longer than 500 characters", field="source")
    return title, body, source.strip()


def document_create(*, title: str, body: str, source: str = "", user=None, shared: bool = False) -> Document:
    """A document of `user`'s; `shared` (staff only) gives every user the document."""
    title, body, source = document_validate(title, body, source)
    if shared and not (user is not None and user.is_staff):
        raise NotShared("only staff can share a document with every user", field="shared")
    return Document.objects.create(title=title, body=body, source=source, added_by=user, shared=shared)


def document_from_file(name: str, data: bytes) -> tuple[str, str]:
    """(title, body) of an uploaded or loaded markdown/text file; rejects other types and bad encodings."""
    if not name.lower().endswith(DOCUMENT_SUFFIXES):
        raise UnsupportedFileType(
            f"unsupported file type {Path(name).suffix or '(none)'!r}; use {', '.join(DOCUMENT_SUFFIXES)}",
            field="file",
        )
    limit = settings.RESEARCH_MAX_DOCUMENT_BYTES
    if len(data) > limit:
        raise DocumentTooLarge(f"file is {len(data)} bytes, more than the limit of {limit}", max_bytes=limit)
    try:
        body = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ServiceError("file is not valid UTF-8 text", field="file") from None
    return title_from(body, Path(name).stem.replace("-", " ").replace("_", " ")), body


def documents_load(paths: list[Path], source_prefix: str | None = None) -> dict[str, list[str]]:
    """Create or update a document per markdown/text file (directories are walked); keyed by source."""
    outcome: dict[str, list[str]] = {"created": [], "updated": [], "skipped": []}
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES
            )
        else:
            files.append(path)
    for file in files:
        if file.name.lower() == "readme.md" and file.parent == CORPUS_DIR:
            continue
        source = f"{source_prefix}{file.name}" if source_prefix else _display_path(file)
        try:
            title, body = document_from_file(file.name, file.read_bytes())
            title, body, source = document_validate(title, body, source)
        except (ServiceError, OSError) as exc:
            outcome["skipped"].append(f"{file}: {getattr(exc, 'message', exc)}")
            continue
        with transaction.atomic():
            document = Document.objects.select_for_update().filter(source=source).order_by("id").first()
            if document is None:
                # Loaded by the operator (the demo corpus, `load_documents`): every user's.
                Document.objects.create(title=title, body=body, source=source, shared=True)
            elif (document.title, document.body) != (title, body):
                document.title, document.body = title, body
                document.save(update_fields=["title", "body", "updated_at"])
            else:
                outcome["skipped"].append(f"{file}: unchanged")
                continue
        outcome["updated" if document else "created"].append(source)
    return outcome


def _display_path(file: Path) -> str:
    resolved = file.resolve()
    try:
        return str(resolved.relative_to(Path(settings.BASE_DIR)))
    except ValueError:
        return str(resolved)


async def research_start(*, user, query: str, on_disconnect: str = "continue", reader=None):
    """Start a research run; returns (run, report). The report is created here or by the pipeline.
    `reader`: as `start_run`'s, gets the run's events from the first."""
    spec = get_spec("research")
    run = await start_run(
        RunRequest(user=user, spec=spec, input=query, on_disconnect=on_disconnect), reader=reader
    )
    return run, await report_for_run(run)
