"""Tasks: what each `task.kind` does in `train`, `evaluate`, `export_model` and `predict`.

Each task is one module that subclasses `Task` and registers it; this package
imports them, so adding a task is one new file plus one import line here (or
`register_task` in the user's own module, before `train` runs).
"""

from mbm_keras.tasks.base import (
    DEFAULT_TASK,
    Task,
    TrainingContext,
    get_task,
    list_tasks,
    model_features,
    register_task,
    task_of,
)
from mbm_keras.tasks import classification  # noqa: E402,F401
from mbm_keras.tasks import retrieval  # noqa: E402,F401
from mbm_keras.tasks import transcription  # noqa: E402,F401
from mbm_keras.tasks import autoencoder  # noqa: E402,F401


def load_run(path):
    """`(model, preprocessor, task)` of a run folder or `.keras` file: the task
    first (every task's layers are registered, and a run that is not one to
    load says so), then the model with `safe_mode=True`.

    Examples:
        >>> model, pre, task = load_run("runs/search")
        >>> task.name
        'retrieval'
    """
    from mbm_keras.run import CONFIG_FILE, Run
    from mbm_keras.tasks.base import task_named

    run = Run(path)
    config = run.config()
    kind = ((config or {}).get("task") or {}).get("kind")
    task = task_named(kind, run.file(CONFIG_FILE)) if kind else None
    if task is not None:
        task.check_loadable(run.folder)
    model, pre = run.load()
    return model, pre, task or task_of(None, model, pre)


__all__ = ["DEFAULT_TASK", "Task", "TrainingContext", "get_task", "list_tasks", "load_run", "model_features",
           "register_task", "task_of"]
