"""`python -m orchestration.cli` is `bosun` (how `bosun dev` starts `bosun serve` with its own interpreter)."""

import sys

from orchestration.cli import main

sys.exit(main())
