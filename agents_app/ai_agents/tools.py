"""Function tools shipped with the demo agents: all real, none reach the network."""

import ast
import math
import operator
import random
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agents import function_tool

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "log": math.log,
    "sin": math.sin,
    "cos": math.cos,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


def evaluate(expression: str) -> float | int:
    """Evaluate an arithmetic expression without `eval`: only numbers, operators and a few functions."""
    if len(expression) > 200:
        raise ValueError("expression too long")
    tree = ast.parse(expression.replace("^", "**").replace("\u00d7", "*").replace("\u00f7", "/"), mode="eval")
    return _eval_node(tree.body)


def _eval_node(node: ast.AST) -> float | int:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval_node(node.left), _eval_node(node.right)
        # Bound exponents so "9**9**9" cannot pin a core.
        if isinstance(node.op, ast.Pow) and abs(right) > 100:
            raise ValueError("exponent too large")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval_node(node.operand))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        return _FUNCTIONS[node.func.id](*[_eval_node(a) for a in node.args])
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    raise ValueError(f"unsupported expression element: {ast.dump(node)[:40]}")


@function_tool
def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression such as "(2 + 3) * 4" or "sqrt(2)" and return the result.

    Args:
        expression: The arithmetic expression to evaluate.
    """
    try:
        result = evaluate(expression)
    except (ValueError, SyntaxError, ZeroDivisionError, OverflowError, TypeError) as exc:
        return f"error: cannot evaluate {expression!r}: {exc}"
    if isinstance(result, float) and result.is_integer():
        result = int(result)
    return str(result)


@function_tool
def current_time(timezone: str = "UTC") -> str:
    """Return the current date and time in an IANA time zone such as "Europe/Paris".

    Args:
        timezone: IANA time zone name; UTC when omitted.
    """
    try:
        zone = ZoneInfo(timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return f"error: unknown time zone {timezone!r}"
    return datetime.now(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


@function_tool
def roll_dice(sides: int = 6, count: int = 1) -> str:
    """Roll dice and return each roll and the total.

    Args:
        sides: Number of sides on each die (2-100).
        count: How many dice to roll (1-20).
    """
    if not 2 <= sides <= 100 or not 1 <= count <= 20:
        return "error: sides must be 2-100 and count 1-20"
    rolls = [random.randint(1, sides) for _ in range(count)]
    return f"rolls={rolls} total={sum(rolls)}"
