"""``python -m ab.nn.sandbox``: whether a sandbox for untrusted code can be had on this machine, and why
not (exit status 0 when it can, 1 when it cannot)."""
from __future__ import annotations

import json
import sys

from ab.nn.sandbox.availability import available
from ab.nn.sandbox.limits import Limits
from ab.nn.util.arguments import Parser


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m ab.nn.sandbox", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    options = parser.parse_args(argv)
    found = available()
    if options.json:
        print(json.dumps({"available": found.ok, "reason": found.reason, "default_limits": Limits().to_json()}))
    else:
        print(f"sandbox: {'available' if found.ok else 'NOT available'}: {found.reason}")
    return 0 if found.ok else 1


if __name__ == "__main__":
    sys.exit(main())
