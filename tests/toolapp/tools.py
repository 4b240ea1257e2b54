"""Tools registered only in end-to-end test servers (EXTRA_INSTALLED_APPS=tests.toolapp)."""

from __future__ import annotations

import time

from voiceconv import tool


@tool(holding_message="One moment while I look that up.", timeout=5)
def slow_lookup(order_id: str) -> dict[str, str]:
    """Look up an order in a slow back office.

    Args:
        order_id: The order number the caller gave.
    """
    time.sleep(2)  # a blocking call, as real back-office clients make
    return {"order_id": order_id, "status": "shipped"}


@tool(timeout=10)
def stuck_lookup(order_id: str) -> dict[str, str]:
    """Look up an order in a back office that takes far longer than a caller waits.

    Args:
        order_id: The order number the caller gave.
    """
    time.sleep(8)
    return {"order_id": order_id, "status": "shipped"}
