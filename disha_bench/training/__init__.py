"""One run of a suite: the run spec, the training recipe and the pieces it is made of.

    python -m disha_bench.training results/smoke/.runs/<run-id>.spec.json
    torchrun --nproc_per_node 2 -m disha_bench.training <spec.json>

- `spec.py`      RunSpec: what the runner hands the worker (one pydantic model, one JSON file).
- `launch.py`    the worker process: read the spec, run the recipe, write the result (rank 0).
- `recipe.py`    the run top to bottom: set up (data, model, adapter, engine), fit, save, evaluate, summarize.
- `setup.py`     seeds and process group, the task's data (train, held-out, evaluation), the base model.
- `loop.py`      the fit loop and its state (step, sampler position, step log).
- `heldout.py`   the held-out loss curve (step 0, every `heldout_every` steps, the last step).
- `resume.py`    between steps: checkpoints (resume, save, stop on SIGTERM/SIGUSR1) and training.max_time.
- `sampler.py`   GlobalBatches: the seeded data order, identical for any number of ranks.
- `schedule.py`  the learning-rate schedule.
- `ds_config.py` the generated DeepSpeed config.
- `evaluation.py` the task metric, sharded over ranks; an exception becomes `evaluation_failed`.
- `evaluate_only.py` runs that train nothing: the unadapted reference, re-evaluating a saved adapter.
- `saving.py`    saving the trained adapter (ZeRO-3 aware).
- `meta.py`      provenance: library versions, git state, hardware, host.

Nothing heavy is imported here: the runner and `suite` import `spec` without loading torch's stack.
"""
