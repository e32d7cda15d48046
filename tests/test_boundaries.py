"""The project's boundaries, read off its source: one way from async code to the database
(agents_app/db.py's `in_sync_thread`, which gives the connection back), one module that talks to
the channel layer (agents_app/runs/layer.py), and no private names of the libraries it uses."""

import ast
import collections
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agents_app", "research_app", "tokens_app", "traces_app", "config")
# The tests and the benchmark use the libraries too; the private-name rule holds for them as well.
EVERYWHERE = (*PACKAGES, "tests", "bench")

# The async ORM (`await Model.objects.aget(...)`, `async for ... in queryset`) leaves the sync
# thread's connection open: on PostgreSQL a pooled one, for as long as the thread lives.
ASYNC_ORM = re.compile(
    r"\.a(get|first|last|exists|count|update|delete|create|bulk_create|bulk_update|get_or_create|"
    r"update_or_create|refresh_from_db|save|aggregate|iterator|in_bulk|contains|earliest|latest)\("
)
# The async iterators the code does loop over: the SDK's events, a run's events.
ASYNC_FOR_ALLOWED = re.compile(r"async for .+ in (result\.stream_events\(\)|(self|follower)\.events\()")


def sources(packages=PACKAGES):
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts and "node_modules" not in path.parts:
                yield path.relative_to(ROOT), path.read_text()


def docstring_lines(text: str) -> set[int]:
    """The lines of a module's docstrings (prose may name what the code must not use)."""
    lines = set()
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                lines.update(range(value.lineno, value.end_lineno + 1))
    return lines


def offending(pattern, allowed=None, skip=(), packages=PACKAGES):
    found = []
    for path, text in sources(packages):
        if str(path) in skip:
            continue
        prose = docstring_lines(text)
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if number in prose or not pattern.search(code) or (allowed and allowed.search(code)):
                continue
            found.append(f"{path}:{number}: {line.strip()}")
    return found


def test_async_code_reaches_the_database_through_one_helper():
    assert offending(ASYNC_ORM) == []
    assert offending(re.compile(r"\basync for\b"), ASYNC_FOR_ALLOWED) == []
    # Nor by a bare sync_to_async (no connection given back), a second helper, or from a request
    # into the engine.
    assert offending(re.compile(r"\bsync_to_async\b"), skip={"agents_app/db.py"}) == []
    assert offending(re.compile(r"\bdatabase_sync_to_async\b")) == []
    assert offending(re.compile(r"\basync_to_sync\b"), skip={"agents_app/runs/layer.py"}) == []


def test_one_module_talks_to_the_channel_layer():
    layer_use = re.compile(r"\bget_channel_layer\b|\bchannel_layers\b|(from|import) channels\.layers")
    assert offending(layer_use, skip={"agents_app/runs/layer.py"}) == []


def test_no_private_names_of_libraries():
    project = "|".join(EVERYWHERE)
    private_import = re.compile(rf"^\s*from (?!(\.|{project})\b)[\w.]+ import .*\b_[a-z]\w*")
    private_module = re.compile(rf"^\s*(from|import) (?!(\.|{project})\b)[\w.]*\._[a-z]")
    private_attribute = re.compile(r"getattr\([^,]+,\s*[\"']_[a-z]")
    for pattern in (private_import, private_module, private_attribute):
        assert offending(pattern, packages=EVERYWHERE) == []


def test_no_private_methods_of_library_classes():
    """A subclass does not override a library class's private step and call it through super():
    the project's own private methods are the only ones reached that way. The one sanctioned
    exception is the streamed-event parser (docs/decisions.md: fast events), under its guards."""
    text = "\n".join(text for _, text in sources(EVERYWHERE))
    private_call = re.compile(r"super\(\)\.(_[a-z]\w*)")
    # A name the project defines more often than it overrides (an override calls super()) is
    # defined here first: a base class of the project's own.
    defined = collections.Counter(re.findall(r"def (_[a-z]\w*)\(", text))
    overridden = collections.Counter(private_call.findall(text))
    own = {name for name, count in defined.items() if count > overridden[name]}
    found = [
        line
        for line in offending(private_call, packages=EVERYWHERE, skip={"agents_app/providers/fast_events.py"})
        if private_call.search(line).group(1) not in own
    ]
    assert found == []
