"""`make bench` starts zhserve on serve configs it derives from serve_config.yaml, one per lever; each
must be one Serve accepts, or the benchmark dies half-way (a lever once set num_replicas beside an
autoscaling_config)."""

from __future__ import annotations

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from load_tests import bench


@pytest.mark.parametrize(("name", "overrides"), [(name, overrides) for name, overrides, _ in bench.LEVERS])
def test_every_lever_config_is_a_valid_serve_config(tmp_path, name: str, overrides: list[str]) -> None:
    path = bench.serve_config(tmp_path / "lever.yaml", 8199, overrides=overrides, args={"sentiment_model": "/m"})
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    ServeDeploySchema.model_validate(config)
    (application,) = config["applications"]
    assert application["args"]["sentiment_model"] == "/m"
    assert config["http_options"]["port"] == 8199
