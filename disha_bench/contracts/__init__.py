"""What the processes hand each other: the result file's schema, the progress events a worker
prints, the checkpoint folder's layout. Producers and consumers both import these; these import
only `core`.
"""
