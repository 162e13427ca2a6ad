"""Imported by the fork server at its start: the training stack, once for every forked run."""

from disha_bench.running.worker import import_stack

import_stack()
