"""Evaluation tasks as a registry: one module per task, each defining ``TASK = Task(...)``.

A task declares its command-line arguments (``add_arguments(parser)``), runs from the parsed arguments
(``run(args) -> dict`` of metrics and details, JSON-able) and prints its result (``report(result, args)``).
``catlip.cli`` builds one subcommand per task by iterating :func:`tasks`; ``--output/-o`` writes the dict as JSON.

A task is one module holding its command line and its procedure, in its family's package
(``catlip.evaluate.classify``, ``.caption``, ``.dense``), which names it in its ``TASKS`` tuple; ``catlip.evaluate``
itself names ``suite`` (``catlip eval``). Adding a task touches that one folder (plus its test). Task modules and
family ``__init__`` files import only the standard library and torch-free catlip modules at top level
(``catlip --help`` reads them all and must not import torch); heavy imports go inside the functions.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable

from catlip.errors import CliError

__all__ = ["Task", "get", "names", "run_task", "tasks"]


@dataclass(frozen=True)
class Task:
    name: str  # the subcommand: `catlip <name> ...`
    help: str  # one line for `catlip --help`
    description: str  # `catlip <name> --help`
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict[str, Any]]
    report: Callable[[dict[str, Any], argparse.Namespace], None]  # print the result for a person
    order: int = 100  # position among the evaluation subcommands in `catlip --help`


_TASKS: dict[str, Task] | None = None


def _task_modules() -> list[str]:
    """Every task module's name: those ``catlip.evaluate`` and its family packages list in ``TASKS``."""
    import catlip.evaluate as root

    found = [f"{root.__name__}.{name}" for name in root.TASKS]
    for info in pkgutil.iter_modules(root.__path__):
        if info.ispkg:
            family = importlib.import_module(f"{root.__name__}.{info.name}")
            found += [f"{family.__name__}.{name}" for name in getattr(family, "TASKS", ())]
    return found


def _discover() -> dict[str, Task]:
    found: dict[str, Task] = {}
    for name in _task_modules():
        module = importlib.import_module(name)
        task = getattr(module, "TASK", None)
        if not isinstance(task, Task):
            raise TypeError(f"{module.__name__} defines no TASK = Task(...)")
        if task.name in found:
            raise ValueError(f"evaluation task {task.name!r} is defined twice")
        found[task.name] = task
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))


def tasks() -> list[Task]:
    """Every registered task, in `--help` order."""
    global _TASKS
    if _TASKS is None:
        _TASKS = _discover()
    return list(_TASKS.values())


def names() -> list[str]:
    return [t.name for t in tasks()]


def get(name: str) -> Task:
    """The task called ``name``; an unknown name is a one-line ``CliError`` listing the valid ones."""
    for task in tasks():
        if task.name == name:
            return task
    raise CliError(f"unknown evaluation task {name!r}; valid tasks: {', '.join(names())}")


def run_task(task: Task | str, args: argparse.Namespace) -> dict[str, Any]:
    """Run, print, and write ``args.output`` (JSON) when given: what each evaluation subcommand does."""
    from catlip.evaluate.common.cli import write_json

    task = get(task) if isinstance(task, str) else task
    result = task.run(args)
    task.report(result, args)
    write_json(result, getattr(args, "output", None))
    return result
