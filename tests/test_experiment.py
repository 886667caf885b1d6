"""``cinn.experiment``'s check of the records an experiment's output folder already holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from cinn.config import ConfigError
from cinn.engine.checkpoint import CHECKPOINT_NAME
from cinn.experiment import Experiment, Run, existing_records, write_record

OPTIONS = {"test_images": "--test-images"}


@pytest.fixture
def experiment(tmp_path) -> Experiment:
    return Experiment(task="mnist", config=Path("configs/mnist/tiny.yaml"), out=tmp_path)


def recorded(experiment: Experiment, run: Run, header: dict[str, object]) -> None:
    """``run``'s folder with a checkpoint and a record of ``header`` evaluated at its first step."""
    run_dir = experiment.run_dir(run)
    run_dir.mkdir(parents=True)
    (run_dir / CHECKPOINT_NAME).touch()
    write_record(run_dir, {**header, "evaluations": [{"step": run.eval_at[0]}]})


def test_a_record_with_the_same_header_is_kept(experiment):
    run = Run("fast-seed0", (), (10, 20))
    recorded(experiment, run, {"variant": "fast", "test_images": 8})
    records = existing_records(experiment, [run], lambda run: {"variant": "fast", "test_images": 8}, OPTIONS)
    assert records[run]["evaluations"] == [{"step": 10}]


def test_a_record_without_its_checkpoint_is_ignored(experiment):
    run = Run("fast-seed0", (), (10,))
    recorded(experiment, run, {"variant": "fast"})
    (experiment.run_dir(run) / CHECKPOINT_NAME).unlink()
    assert existing_records(experiment, [run], lambda run: {"variant": "other"}, OPTIONS) == {}


@pytest.mark.parametrize("key, value, message", [
    ("test_images", 4, "holds evaluations with test_images 8, not 4; give --test-images 8 or choose another "
                       "--out"),
    ("variant", "slow", "holds evaluations with variant fast, not slow; another version of this script made them: "
                        "choose another --out"),
])
def test_a_differing_header_names_the_option_only_where_there_is_one(experiment, key, value, message):
    run = Run("fast-seed0", (), (10,))
    recorded(experiment, run, {"variant": "fast", "test_images": 8})
    header = {"variant": "fast", "test_images": 8, key: value}
    with pytest.raises(ConfigError) as error:
        existing_records(experiment, [run], lambda run: header, OPTIONS)
    assert message in str(error.value)


def test_an_evaluation_step_before_the_last_one_made_is_refused(experiment):
    run = Run("fast-seed0", (), (10, 20))
    recorded(experiment, run, {"variant": "fast"})
    with pytest.raises(ConfigError, match=r"--eval-at 5: .* is already trained past that step"):
        existing_records(experiment, [Run("fast-seed0", (), (5, 10, 20))], lambda run: {"variant": "fast"}, {})
