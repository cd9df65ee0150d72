"""Check a service's ledger: every order processed, and no committed order processed again.

    python examples/orders/check_ledger.py inventory.ledger --orders 100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import check_ledger


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ledger", type=Path)
    parser.add_argument("--orders", type=int, default=None,
                        help="expect order-000001 .. order-N to be processed")
    parser.add_argument("--first", type=int, default=1)
    args = parser.parse_args()
    report = check_ledger(args.ledger)
    again = sum(n - 1 for n in report.processed.values())
    print(f"{args.ledger}: {len(report.processed)} orders processed, {again} re-deliveries "
          f"of uncommitted work")
    for instance, partitions in sorted(report.by_instance.items()):
        print(f"  {instance} processed partitions {sorted(partitions)}")
    ok = True
    if args.orders is not None:
        missing = report.missing([f"order-{n:06d}" for n in
                                  range(args.first, args.first + args.orders)])
        if missing:
            ok = False
            print(f"MISSING {len(missing)} orders, e.g. {missing[:5]}")
    for v in report.violations:
        ok = False
        print(f"VIOLATION {v}")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
