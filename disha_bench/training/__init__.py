"""One run of a suite: everything that runs inside its processes (the spec it reads is
`disha_bench.config.run_spec`).

    python -m disha_bench.training results/smoke/.runs/<run-id>.spec.json
    torchrun --nproc_per_node 2 -m disha_bench.training <spec.json>

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
- `distributed.py` rank helpers (rank, world size, collectives, local rank 0 first, dying with the launcher).
- `memory.py`    peak memory (CPU VmHWM, CUDA max allocated).
- `checkpointer.py` mid-run checkpoints (the folder layout is `disha_bench.contracts.checkpoints`).
- `feature_cache.py` tokenized features cached per task, written once per node.
- `cost_repeat.py` one short repeat of the cost phase.

Nothing heavy is imported here.
"""
