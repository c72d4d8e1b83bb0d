"""`vps-worker` / `python -m vps_worker`."""

from __future__ import annotations

import sys


def main() -> int:
    sys.stderr.write("vps-worker: not implemented yet\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
