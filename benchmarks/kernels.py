"""Print the ops-kernel timing table (same as `det benchmark kernels`).

Usage: python benchmarks/kernels.py [--repeats N] [--json]
"""

from __future__ import annotations

import sys

from detcli.cli.benchmark import app

if __name__ == "__main__":
    sys.exit(app(["kernels", *sys.argv[1:]], standalone_mode=False) or 0)
