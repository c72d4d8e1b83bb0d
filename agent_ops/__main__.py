"""`python -m agent_ops`."""

import sys

from agent_ops.cli import main

sys.exit(main())
