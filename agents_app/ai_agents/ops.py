"""The `ops` agent: acts on orders, and asks a person first when an action is large.

`refund_order` shows the one flag any agent's tool sets to need approval: the SDK's own
`needs_approval`, `True` (always) or a condition on the call's arguments, as here. The run then
pauses `awaiting_approval` until the run's owner or staff decides (docs/approvals.md)."""

from typing import Any

from agents import Agent, RunContextWrapper, function_tool

# Refunds above this amount wait for a person's approval.
APPROVAL_ABOVE = 100


async def large_refund(_context: RunContextWrapper[Any], arguments: dict[str, Any], _call_id: str) -> bool:
    return float(arguments.get("amount") or 0) > APPROVAL_ABOVE


@function_tool(needs_approval=large_refund)
def refund_order(order_id: str, amount: float) -> str:
    """Refund an amount of an order to the customer. Refunds above 100 need a person's approval.

    Args:
        order_id: The order's id, for example "A17".
        amount: The amount to refund, in the order's currency.
    """
    if amount <= 0:
        return "error: the amount must be positive"
    return f"refunded {amount:.2f} on order {order_id}"


INSTRUCTIONS = (
    "You are an operations assistant for an online shop. Use refund_order to refund orders; "
    "large refunds wait for a person's approval. Tell the user what was done, or that it was not "
    "done and why."
)


def build_ops_agent(model: str | None = None) -> Agent:
    return Agent(name="Ops", instructions=INSTRUCTIONS, tools=[refund_order], model=model)
