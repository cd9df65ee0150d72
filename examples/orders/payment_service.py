"""The payment service: charges each new order (consumer group ``payment``), independently
of the inventory service: each group has its own committed offsets.

    python examples/orders/payment_service.py
"""

from __future__ import annotations

import sys
from typing import Any

from common import run_service, service_args


def charge(order: dict[str, Any], instance: str) -> str:
    cents = order["amount_cents"]
    return f"charged {cents // 100}.{cents % 100:02d} EUR for {order['order_id']}"


if __name__ == "__main__":
    args = service_args("payment", __doc__.split("\n\n")[0])
    sys.exit(run_service("payment", args, charge))
