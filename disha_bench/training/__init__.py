"""One run of a suite: the run spec, the training recipe and the pieces it is made of.

    python -m disha_bench.training results/smoke/.runs/<run-id>.spec.json
    torchrun --nproc_per_node 2 -m disha_bench.training <spec.json>

- `spec.py`      RunSpec: what the runner hands the worker (one pydantic model, one JSON file).
- `launch.py`    the worker process: read the spec, run the recipe, write the result (rank 0).
- `recipe.py`    the run top to bottom: set up (data, model, adapter, engine), fit, evaluate, summarize.
- `loop.py`      the fit loop and its state (step, sampler position, step log).
- `sampler.py`   GlobalBatches: the seeded data order, identical for any number of ranks.
- `schedule.py`  the learning-rate schedule.
- `ds_config.py` the generated DeepSpeed config.
- `evaluation.py` the task metric, sharded over ranks.
- `saving.py`    saving the trained adapter (ZeRO-3 aware).
- `meta.py`      provenance: library versions, git state, hardware, host.

Nothing heavy is imported here: the runner and `suite` import `spec` without loading torch's stack.
"""
