"""One training run: the run directory and its ``config.json``, the shared vocabulary, and the recipes,
side by side in two processes or one after the other."""

from __future__ import annotations

import logging
import multiprocessing
import platform
import time
from pathlib import Path

import torch

from training.config import RunConfig, Task
from training.recipes.common import RecipeRun, build_shared_vocab

log = logging.getLogger("zhserve.train")


def _train_task(task: Task, run: RecipeRun) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s [{task}] %(message)s")
    torch.set_num_threads(run.settings.threads)
    if task == "ner":
        from training.recipes.ner import train_ner

        train_ner(run)
    else:
        from training.recipes.sentiment import train_sentiment

        train_sentiment(run)


def train(config: RunConfig) -> int:
    """Train every recipe of ``config``; returns the exit status (1 if a recipe failed in its process)."""
    settings = config.settings
    torch.set_num_threads(settings.threads)
    run_dir = Path(settings.runs) / time.strftime("train-%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    config.write(run_dir / "config.json")
    started = time.time()
    log.info("building the vocabulary")
    vocab_tokens = build_shared_vocab(settings.data, settings.dev_seed)
    log.info("vocabulary: %d tokens", len(vocab_tokens))
    tasks = config.tasks
    if len(tasks) > 1 and not config.sequential:
        # Two processes with half the threads each: the per-step work of these small networks does
        # not scale well across threads, so two models side by side finish sooner on 2 cores.
        halved = settings.model_copy(update={"threads": max(1, settings.threads // 2)})
        run = RecipeRun(config.model_copy(update={"settings": halved}), vocab_tokens, run_dir)
        context = multiprocessing.get_context("spawn")
        workers = [context.Process(target=_train_task, args=(task, run), name=task) for task in tasks]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        failed = [w.name for w in workers if w.exitcode != 0]
        if failed:
            log.error("training failed for %s", failed)
            return 1
    else:
        run = RecipeRun(config, vocab_tokens, run_dir)
        for task in tasks:
            _train_task(task, run)
    log.info("done in %.1f min; reports in %s", (time.time() - started) / 60, run_dir)
    log.info("platform: %s, torch %s", platform.platform(), torch.__version__)
    return 0
