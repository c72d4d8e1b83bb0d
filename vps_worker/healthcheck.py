"""`python -m vps_worker.healthcheck [FILE] [--max-age SECONDS]`: exit 0 while the worker loop is alive.

The worker touches its alive file (WORKER_ALIVE_FILE) every loop; a file older than --max-age means the
loop is stuck or gone. Used by the Dockerfile's HEALTHCHECK.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m vps_worker.healthcheck")
    parser.add_argument("file", nargs="?", default="/tmp/vps-worker.alive")  # noqa: S108 - the container's own tmp
    parser.add_argument("--max-age", type=float, default=120.0)
    args = parser.parse_args()
    try:
        age = time.time() - Path(args.file).stat().st_mtime
    except OSError:
        sys.stderr.write(f"unhealthy: {args.file} missing\n")
        return 1
    if age > args.max_age:
        sys.stderr.write(f"unhealthy: last loop {age:.0f}s ago\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
