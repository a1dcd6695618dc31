"""``zhserve-train``: subcommands and options built from the config models, ``--config`` from a run or a
model directory, one ``error:`` line on bad input, and the old flat command line of ``training.train``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training import cli
from training.config import NerRecipe, RunConfig, SentimentRecipe, Settings
from training.train import translate


def config_of(*argv: str) -> RunConfig:
    _, config = cli.parse(list(argv))
    assert config is not None
    return config


def test_a_task_subcommand_trains_that_recipe_only_with_the_defaults_of_the_models() -> None:
    config = config_of("ner", "--ner-epochs", "1", "--subset", "0.05", "--threads", "1")
    assert config.sentiment is None
    assert config.ner == NerRecipe(epochs=1)
    assert config.settings == Settings(subset=0.05, threads=1)
    both = config_of("all", "--sequential", "--sentiment-linear-c", "2", "4")
    assert both.sequential and both.tasks == ["ner", "sentiment"]
    assert both.sentiment == SentimentRecipe(linear_c=[2.0, 4.0])


def test_network_overrides_merge_key_values_and_json_objects() -> None:
    config = config_of(
        "ner", "--ner-net", "hidden=96", "--ner-net", '{"dilations": [1, 2]}', "--ner-net", "lstm_hidden=0"
    )
    assert config.ner is not None
    assert config.ner.net == {"hidden": 96, "dilations": [1, 2], "lstm_hidden": 0}


@pytest.mark.parametrize(
    "argv",
    [
        ["ner", "--ner-net", "hiden=96"],
        ["ner", "--ner-self-train", "people-daily"],
        ["ner", "--ner-teacher-models", "models/ner-ensemble"],  # beside the default --ner-distill 3
        ["sentiment", "--subset", "0"],
    ],
)
def test_invalid_runs_print_one_error_line_and_exit_2(argv, capsys) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


def test_config_starts_from_a_manifest_and_options_override_it(tmp_path) -> None:
    trained = RunConfig(settings=Settings(seed=11, subset=0.2), ner=NerRecipe(epochs=2, augment=10))
    manifest = {"name": "zhserve-ner", "provenance": {"config": trained.provenance("ner")}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    config = config_of("ner", "--config", str(tmp_path / "manifest.json"), "--ner-epochs", "1")
    assert config.settings == trained.settings
    assert config.ner == NerRecipe(epochs=1, augment=10)

    trained.write(tmp_path / "config.json")
    again = config_of("sentiment", "--config", str(tmp_path / "config.json"))
    assert again.ner is None and again.sentiment == SentimentRecipe() and again.settings.seed == 11
    assert cli.main(["ner", "--config", str(tmp_path / "missing.json")]) == 2


def test_the_old_flat_command_line_means_the_same_run() -> None:
    old = [
        "--task", "ner", "--ner-epochs", "1", "--subset", "0.05", "--ner-distill", "0",
        "--ner-config", '{"hidden": 96}', "--org-convention", "split", "--threads=1",
    ]  # fmt: skip
    assert translate(old) == [
        "ner", "--ner-epochs", "1", "--subset", "0.05", "--ner-distill", "0",
        "--ner-net", '{"hidden": 96}', "--ner-org-convention", "split", "--threads=1",
    ]  # fmt: skip
    assert config_of(*translate(old)) == config_of(
        "ner", "--ner-epochs", "1", "--subset", "0.05", "--ner-distill", "0", "--ner-net", "hidden=96",
        "--ner-org-convention", "split", "--threads", "1",
    )  # fmt: skip
    sentiment = translate(["--task", "sentiment", "--sentiment-config", "{}", "--fasttext-lr-scale", "2"])
    assert config_of(*sentiment).sentiment == SentimentRecipe(fasttext_lr_scale=2.0)
    assert translate(["--data", "d", "--write-dev", "out", "--ner-epochs", "2", "--split-seed", "3"]) == [
        "write-dev", "out", "--data", "d", "--split-seed", "3",
    ]  # fmt: skip
    assert translate([])[0] == "all"


def test_every_option_has_a_flag_and_the_help_names_its_default(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["all", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # unwrapped
    for model, prefix in ((Settings, ""), (NerRecipe, "ner-"), (SentimentRecipe, "sentiment-")):
        for name in model.model_fields:
            assert f"--{prefix}{name.replace('_', '-')}" in text
    assert "(default: 'training+people-daily')" in text


def test_write_dev_writes_the_splits_the_cards_are_scored_on(tmp_path) -> None:
    data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not (data / "ner" / "msra_train.jsonl").is_file():
        pytest.skip(f"corpora not available at {data}")
    assert cli.main(["write-dev", str(tmp_path), "--data", str(data), "--sentiment-hold-out", "fruit"]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(
        f"{name}.jsonl" for name in ["news_msra", "web_cluener", "review_chnsenticorp", "unseen_weibo", "unseen_fruit"]
    )
    assert sum(1 for _ in (tmp_path / "unseen_fruit.jsonl").open(encoding="utf-8")) == 9992  # the README's count
