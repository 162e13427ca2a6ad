"""`python -m disha_bench.training SPEC.json`: one run (see launch.py)."""

import sys

from disha_bench.training.launch import main

sys.exit(main(sys.argv[1:]))
