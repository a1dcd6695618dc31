"""The typed run config: recipe options are checked when the command line is parsed, network overrides
against the network's own config, and a run's config round-trips through its JSON."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from training.config import NerRecipe, RunConfig, SentimentRecipe, Settings


def test_network_overrides_are_checked_against_the_network_config() -> None:
    assert NerRecipe(net={"hidden": "96", "dilations": [1, 2]}).net == {"hidden": 96, "dilations": [1, 2]}
    with pytest.raises(ValidationError, match="unknown NerConfig fields \\['hiden'\\]"):
        NerRecipe(net={"hiden": 96})
    with pytest.raises(ValidationError, match="vocab_size"):  # fixed by the run, never by a recipe
        NerRecipe(net={"vocab_size": 10})
    with pytest.raises(ValidationError):
        SentimentRecipe(net={"dilations": "wide"})
    with pytest.raises(ValidationError, match="unknown LinearConfig fields"):
        SentimentRecipe(linear_features={"order": [1]})
    assert SentimentRecipe(linear_features={"buckets": {"2": 64}}).linear_features == {"buckets": {"2": 64}}


def test_inconsistent_options_fail_at_parse_time() -> None:
    with pytest.raises(ValidationError, match="exclusive"):
        NerRecipe(self_train="people-daily")  # the default distils from 3 teachers
    assert NerRecipe(self_train="people-daily", distill=0).self_train == "people-daily"
    with pytest.raises(ValidationError, match="validation-rows"):
        SentimentRecipe(validation_rows=0)
    assert SentimentRecipe(linear="off", validation_rows=0).validation_rows == 0
    with pytest.raises(ValidationError):
        Settings(subset=0)
    with pytest.raises(ValidationError):
        NerRecipe(unknown_option=1)
    with pytest.raises(ValidationError, match="trains no model"):
        RunConfig()


def test_the_split_seed_defaults_to_the_seed() -> None:
    assert Settings(seed=7).dev_seed == 7
    assert Settings(seed=7, split_seed=3).dev_seed == 3


def test_a_run_config_round_trips_and_gives_each_manifest_its_own_recipe(tmp_path) -> None:
    config = RunConfig(
        settings=Settings(seed=5, subset=0.5), ner=NerRecipe(epochs=1, net={"hidden": 64}), sentiment=SentimentRecipe()
    )
    config.write(tmp_path / "config.json")
    assert RunConfig.model_validate_json((tmp_path / "config.json").read_text()) == config
    assert config.tasks == ["ner", "sentiment"]
    provenance = config.provenance("ner")
    assert set(provenance) == {"settings", "ner"}
    assert provenance["ner"]["net"] == {"hidden": 64} and provenance["settings"]["seed"] == 5
    json.dumps(provenance)  # plain JSON, as a manifest stores it
