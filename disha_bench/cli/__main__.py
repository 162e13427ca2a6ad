"""`python -m disha_bench.cli ...` = `disha-bench ...`."""

import sys

from disha_bench.cli import main

sys.exit(main())
