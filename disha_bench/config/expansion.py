"""A suite expanded into its runs: one typed RunSpec per task x method x seed, with stable run ids.
"""

from __future__ import annotations

from disha_bench.config.run_spec import UNADAPTED, UNADAPTED_LABEL, MethodEntry, RunAnalysis, RunMethod, RunSpec
from disha_bench.config.suite import Suite, TaskConfig, lm_eval_for, sampled, task_training
from disha_bench.config.sweep import swept_entries


def expand_runs(suite: Suite, world_size: int = 1, file: str | None = None) -> list[RunSpec]:
    """One typed run spec per task x method (x lr of its sweep) x seed, each with a stable `run_id`, plus one unadapted
    reference run per task (`analysis.unadapted`). Seed-major with methods interleaved (for seed,
    for task, for method): machine drift spreads over the methods instead of lining up with one.
    Each task's runs train with the suite's `training` under the task's own keys (`task_training`),
    then the method's `lr`. With `training.global_batch` each run's grad_accum is derived for
    `world_size` ranks."""
    from disha_bench import methods, tasks
    from disha_bench.config.batching import for_ranks

    table = method_table(suite)
    analysis = RunAnalysis(reference=reference_label(suite), targets=list(suite.convergence.targets),
                           margins=suite.analysis.margins.model_dump())
    task_configs = [TaskConfig.model_validate({**tasks.get(t.name).options, **t.model_dump()}) for t in suite.tasks]
    # Numeric alpha where r is fixed (`alpha: 2r` with r: 36 -> 72.0); a matched rank (and its
    # relative alpha) is resolved in the worker, where the model is.
    trainings = {t.name: for_ranks(task_training(suite, t, file), world_size, file) for t in suite.tasks}
    entries = [(RunMethod(name=m.name, label=label, params=methods.validate_params(m.name, dict(m.model_extra or {}))),
                {"lr": lr} if lr else {},
                analysis.model_copy(update={"sweep": membership}) if membership else analysis)
               for m in suite.methods for label, lr, membership in swept_entries(suite, m)]
    if suite.analysis.unadapted:
        entries.insert(0, (RunMethod(name=UNADAPTED, label=UNADAPTED_LABEL), {}, analysis))
    names = [t.name for t in suite.tasks]
    evaluations = {name: suite.evaluation.model_copy(update={"lm_eval": lm_eval_for(suite.evaluation.lm_eval, name, names)})
                   for name in names}
    runs = []
    for seed in suite.seeds:
        for task in task_configs:
            for method, method_training, recorded in entries:
                if method.name == UNADAPTED and seed != suite.seeds[0]:
                    continue  # nothing is trained: one run per task says it all
                training = trainings[task.name].model_copy(update=method_training, deep=True)
                spec = RunSpec(
                    suite=suite.name, model=suite.model, task=sampled(task, seed), method=method, training=training,
                    evaluation=evaluations[task.name], seed=seed, world_size=world_size, methods=table,
                    convergence=suite.convergence, analysis=recorded,
                )
                runs.append(spec.with_id())
    return runs


def reference_label(suite: Suite) -> str:
    """The method every other is compared with: `analysis.reference`, else the first method."""
    first = suite.methods[0]
    return suite.analysis.reference or first.label or first.name


def method_table(suite: Suite) -> dict[str, MethodEntry]:
    """label -> the method as written: what parameter matching needs. The params are left
    unvalidated here because validation fills in a default rank, and a method may not carry both a
    rank and `match_params`."""

    return {(m.label or m.name): MethodEntry(name=m.name, params=dict(m.model_extra or {})) for m in suite.methods}
