"""The inventory service: reserves stock for each new order (consumer group ``inventory``).

Run two instances and they split the topic's partitions; stop or kill one and the other
takes over its partitions from the last committed offset.

    python examples/orders/inventory_service.py --instance inventory-1
"""

from __future__ import annotations

import sys
from typing import Any

from common import run_service, service_args


def reserve(order: dict[str, Any], instance: str) -> str:
    return f"reserved {order['quantity']} x {order['sku']} for {order['order_id']}"


if __name__ == "__main__":
    args = service_args("inventory", __doc__.split("\n\n")[0])
    sys.exit(run_service("inventory", args, reserve))
