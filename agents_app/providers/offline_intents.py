"""Rules that spot a clear request for a shipped tool, or a specialist's domain, in a user message."""

from __future__ import annotations

import ast
import functools
import re
import zoneinfo
from collections.abc import Iterable
from typing import Any

_WORD_OPERATORS = [
    (r"\bsquare root of\s*(\d+(?:\.\d+)?)", r"sqrt(\1)"),
    (r"\bmultiplied by\b", "*"),
    (r"\btimes\b", "*"),
    (r"\bplus\b", "+"),
    (r"\bminus\b", "-"),
    (r"\bdivided by\b", "/"),
    (r"\bto the power of\b", "**"),
    (r"\bsquared\b", "**2"),
    (r"\bcubed\b", "**3"),
    (r"\bmod(?:ulo)?\b", "%"),
    (r"(?<=\d)\s*[x\u00d7]\s*(?=\d)", " * "),  # "3 x 4" and the multiplication sign
    (r"÷", "/"),
]
_EXPRESSION = re.compile(r"(?:\b(?:sqrt|abs|round|log|sin|cos|pi)\b|\*\*|[\d.\s+\-*/%^()])+")
_HAS_OPERATOR = re.compile(r"[\d)]\s*(?:\*\*|[-+*/%^])\s*[-\d(a-z]|\b(?:sqrt|abs|round|log|sin|cos)\s*\(")
_ASKS_TO_COMPUTE = re.compile(
    r"\b(calculate|compute|evaluate|what(?:'s| is)|how much|solve|math|result of)\b|=", re.IGNORECASE
)

_ASKS_TIME = re.compile(
    r"\b(what time|time is it|current (?:time|date)|the time (?:in|now)|what(?:'s| is) the (?:time|date)"
    r"|today's date|what day is|what is today|date today)\b",
    re.IGNORECASE,
)
_IANA_ZONE = re.compile(r"\b([A-Z][A-Za-z_]+(?:/[A-Z][A-Za-z_\-]+)+)\b")
_PLACE = re.compile(r"\bin ([A-Za-z][A-Za-z .'-]{1,40})")

_ASKS_ROLL = re.compile(r"\b(roll|throw|toss)\b", re.IGNORECASE)
_DICE = re.compile(r"\b(dice|die|d\d+|\d+d\d+)\b", re.IGNORECASE)
_REFUND = re.compile(
    r"\brefund\b.*?\border\s+#?([A-Za-z0-9][\w-]{0,31})\b.*?(\d+(?:\.\d+)?)", re.IGNORECASE | re.DOTALL
)
_NUMBER_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
_NUMBER_WORDS.update({"a": 1, "an": 1})

_STOP_WORDS = set(
    "the for and with that this what handoff agent handle request specialist expert assistant help "
    "questions question tasks task about other anything everything things".split()
)


def find_expression(text: str) -> str | None:
    """The arithmetic expression the message clearly asks to evaluate, if any."""
    normalized = text
    for pattern, replacement in _WORD_OPERATORS:
        normalized = re.sub(pattern, replacement, normalized, flags=re.IGNORECASE)
    best = None
    for match in _EXPRESSION.finditer(normalized):
        candidate = match.group().strip(" .")
        if not re.search(r"\d", candidate) or not _HAS_OPERATOR.search(candidate):
            continue
        try:
            ast.parse(candidate.replace("^", "**"), mode="eval")
        except SyntaxError:
            continue
        if best is None or len(candidate) > len(best):
            best = candidate
    if best is None:
        return None
    # "I have 3-4 apples" is not a request; "17 * 23" alone or "what is 17 * 23" is.
    letters = len(re.sub(r"[^A-Za-z]", "", text))
    if _ASKS_TO_COMPUTE.search(text) or letters <= len(best):
        return " ".join(best.split())
    return None


@functools.cache
def _zones_by_place() -> dict[str, str]:
    zones: dict[str, str] = {}
    for zone in sorted(zoneinfo.available_timezones()):
        if "/" in zone and not zone.startswith(("Etc/", "SystemV/", "posix/", "right/")):
            zones.setdefault(zone.rsplit("/", 1)[1].lower(), zone)
    return zones


def find_time_request(text: str) -> str | None:
    """The IANA time zone a "what time is it" message asks about ("UTC" when none is named)."""
    if not _ASKS_TIME.search(text):
        return None
    for candidate in _IANA_ZONE.findall(text):
        if candidate in zoneinfo.available_timezones():
            return candidate
    if re.search(r"\b(UTC|GMT)\b", text):
        return "UTC"
    place = _PLACE.search(text)
    if place:
        words = re.findall(r"[A-Za-z'-]+", place.group(1))
        for size in (3, 2, 1):
            zone = _zones_by_place().get("_".join(words[:size]).lower())
            if zone:
                return zone
    return "UTC"


def find_dice_request(text: str) -> dict[str, int] | None:
    """Arguments for roll_dice when the message asks to roll dice."""
    if not (_ASKS_ROLL.search(text) and _DICE.search(text)):
        return None
    sides, count = 6, 1
    if m := re.search(r"\b(\d+)d(\d+)\b", text, re.IGNORECASE):
        count, sides = int(m.group(1)), int(m.group(2))
    else:
        if m := re.search(r"\bd(\d+)\b", text, re.IGNORECASE):
            sides = int(m.group(1))
        elif m := re.search(r"\b(\d+)[- ]sided\b|\b(\d+) sides\b", text, re.IGNORECASE):
            sides = int(m.group(1) or m.group(2))
        word = r"(\d+|" + "|".join(_NUMBER_WORDS) + r")"
        if m := re.search(word + r"\s+(?:\d+[- ]sided\s+)?(?:dice|die|d\d+)\b", text, re.IGNORECASE):
            token = m.group(1).lower()
            count = int(token) if token.isdigit() else _NUMBER_WORDS[token]
    return {"sides": sides, "count": max(count, 1)}


def find_refund_request(text: str) -> dict[str, Any] | None:
    """Arguments for refund_order when the message asks to refund an amount of an order
    ("refund order A17 250")."""
    if m := _REFUND.search(text):
        return {"order_id": m.group(1), "amount": float(m.group(2))}
    return None


def tool_requests(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(tool name, arguments) for every shipped tool the message clearly asks for."""
    requests: list[tuple[str, dict[str, Any]]] = []
    if expression := find_expression(text):
        requests.append(("calculate", {"expression": expression}))
    if zone := find_time_request(text):
        requests.append(("current_time", {"timezone": zone}))
    if dice := find_dice_request(text):
        requests.append(("roll_dice", dice))
    if refund := find_refund_request(text):
        requests.append(("refund_order", refund))
    return requests


def stem(word: str) -> str:
    word = word.lower()
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    for suffix in ("ations", "ation", "ings", "ing", "ions", "ion", "es", "s", "ed", "er"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def keywords(text: str) -> set[str]:
    return {stem(w) for w in re.findall(r"[A-Za-z]{3,}", text) if w.lower() not in _STOP_WORDS}


def _matches(word: str, keyword: str) -> bool:
    shorter = min(len(word), len(keyword))
    return word == keyword or (shorter >= 4 and (word.startswith(keyword) or keyword.startswith(word)))


def domain_score(text: str, description: str) -> int:
    """How many of a specialist's description keywords the message touches."""
    words = keywords(text)
    if find_expression(text):
        # A bare "17 * 23" names no domain, but it is math.
        words |= {"math", "arithmetic", "calcul"}
    return sum(1 for kw in keywords(description) if any(_matches(w, kw) for w in words))


def best_match(text: str, candidates: Iterable[tuple[Any, str]]) -> Any | None:
    """The candidate whose description best fits the message, or None when none fits at all."""
    best, best_score = None, 0
    for candidate, description in candidates:
        score = domain_score(text, description)
        if score > best_score:
            best, best_score = candidate, score
    return best
