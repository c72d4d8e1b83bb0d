"""`python -m agent_ops.cli`."""

import sys

from agent_ops.cli import main

sys.exit(main())
