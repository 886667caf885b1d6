"""Config loading: defaults, YAML sections, dotted command-line overrides, type checks, validate() hooks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from cinn.config import (
    ConfigError,
    apply_overrides,
    config_differences,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_overrides,
    save_config,
)


@dataclass
class BlockConfig:
    depth: int = 2

    def validate(self) -> None:
        if self.depth < 1:
            raise ConfigError(f"model.block.depth must be at least 1, got {self.depth}")


@dataclass
class ModelConfig:
    width: int = 64
    coupling: Literal["affine", "additive"] = "affine"
    kernel: tuple[int, int, int] = (3, 1, 3)
    sizes: tuple[int, ...] = (1, 2)
    widths: list[int] = field(default_factory=lambda: [8, 16])
    block: BlockConfig = field(default_factory=BlockConfig)


@dataclass
class TrainConfig:
    lr: float = 1e-3
    batch_size: int = 64
    ema_decay: float | None = None
    max_steps: Optional[int] = 100  # noqa: UP045 (the older spelling must work too)
    compile: bool = False
    device: str = "auto"

    def validate(self) -> None:
        if self.batch_size <= 0:
            raise ConfigError(f"train.batch_size must be positive, got {self.batch_size}")


@dataclass
class ExperimentConfig:
    name: str = "run"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        if not self.name:
            raise ConfigError("name must not be empty")


@dataclass
class PathConfig:
    where: Path = Path(".")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_overrides():
    config = load_config(ExperimentConfig)
    assert config == ExperimentConfig()
    assert config.model.kernel == (3, 1, 3)


def test_yaml_sections_fill_nested_dataclasses_and_keep_missing_defaults(tmp_path):
    path = write(tmp_path, "name: big\nmodel:\n  width: 32\n  kernel: [5, 5, 5]\n  block:\n    depth: 4\n"
                           "train:\n  lr: 1e-2\n")
    config = load_config(ExperimentConfig, path)
    assert (config.name, config.model.width, config.model.block.depth) == ("big", 32, 4)
    assert config.model.kernel == (5, 5, 5) and isinstance(config.model.kernel, tuple)
    assert config.train.lr == 0.01  # PyYAML reads 1e-2 as a string; it is still a float here
    assert config.model.coupling == "affine" and config.train.batch_size == 64 and config.seed == 0


def test_empty_yaml_file_gives_defaults(tmp_path):
    assert load_config(ExperimentConfig, write(tmp_path, "# nothing set\n")) == ExperimentConfig()


def test_int_is_accepted_for_float(tmp_path):
    config = load_config(ExperimentConfig, write(tmp_path, "train:\n  lr: 1\n"))
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)


@pytest.mark.parametrize("overrides", [
    ["--train.lr=0.5"],
    ["--train.lr", "0.5"],
    ["train.lr=0.5"],
    ["-train.lr=0.5"],
])
def test_override_forms(overrides):
    assert load_config(ExperimentConfig, overrides=overrides).train.lr == 0.5


def test_overrides_apply_after_the_file_and_reach_nested_sections(tmp_path):
    path = write(tmp_path, "seed: 3\ntrain:\n  batch_size: 32\n")
    config = load_config(ExperimentConfig, path, ["--train.batch_size", "16", "--model.block.depth=7", "seed=5"])
    assert (config.train.batch_size, config.model.block.depth, config.seed) == (16, 7, 5)


def test_parse_overrides_pairs_and_negative_values():
    pairs = parse_overrides(["--a.b=1", "--c", "-2", "d=x=y", "--e", "[1, 2]"])
    assert pairs == [("a.b", "1"), ("c", "-2"), ("d", "x=y"), ("e", "[1, 2]")]


@pytest.mark.parametrize("args", [["--train.lr"], ["--train.lr", "--seed=1"], ["seed=1", "train.lr"]])
def test_dangling_key_is_an_error(args):
    with pytest.raises(ConfigError, match=r"'(--)?train\.lr' has no value"):
        parse_overrides(args)


def test_apply_overrides_leaves_the_input_unchanged():
    config = ExperimentConfig()
    changed = apply_overrides(config, ["--model.width=8", "--model.block.depth=3"])
    assert (changed.model.width, changed.model.block.depth) == (8, 3)
    assert config == ExperimentConfig()


def test_unknown_key_in_yaml_names_dotted_key_file_and_valid_keys(tmp_path):
    path = write(tmp_path, "model:\n  widht: 3\n")
    with pytest.raises(ConfigError) as error:
        load_config(ExperimentConfig, path)
    message = str(error.value)
    assert "unknown key 'model.widht'" in message and str(path) in message
    assert "valid keys of 'model': block, coupling, kernel, sizes, width, widths" in message


def test_unknown_nested_key_in_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"'model\.block\.dept' .*valid keys of 'model\.block': depth$"):
        load_config(ExperimentConfig, write(tmp_path, "model:\n  block:\n    dept: 3\n"))


@pytest.mark.parametrize(("overrides", "expected"), [
    (["--train.lrr=1"], "unknown key 'train.lrr' (command line); valid keys of 'train': batch_size, compile, "
                        "device, ema_decay, lr, max_steps"),
    (["--sed=1"], "unknown key 'sed' (command line); valid top-level keys: model, name, seed, train"),
    (["--modle.width=1"], "unknown key 'modle' (command line); valid top-level keys: model, name, seed, train"),
    (["--model.block.dept=1"],
     "unknown key 'model.block.dept' (command line); valid keys of 'model.block': depth"),
])
def test_unknown_key_on_command_line(overrides, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(ExperimentConfig, overrides=overrides)


def test_section_cannot_be_given_a_value(tmp_path):
    with pytest.raises(ConfigError, match=r"'train' is a section.*--train\.KEY=VALUE"):
        load_config(ExperimentConfig, overrides=["--train=3"])
    with pytest.raises(ConfigError, match=r"section 'train' must be a mapping.*got 3 \(.*config\.yaml\)"):
        load_config(ExperimentConfig, write(tmp_path, "train: 3\n"))


def test_a_value_is_not_a_section():
    with pytest.raises(ConfigError, match=r"'seed' is a value, not a section, so 'seed\.x' does not exist"):
        load_config(ExperimentConfig, overrides=["--seed.x=1"])


@pytest.mark.parametrize(("override", "expected"), [
    ("--train.batch_size=abc", "train.batch_size must be an int, got 'abc' (command line)"),
    ("--train.batch_size=1.5", "train.batch_size must be an int, got '1.5' (command line)"),
    ("--train.lr=fast", "train.lr must be a float, got 'fast' (command line)"),
    ("--train.lr=[1]", "train.lr must be a float, got '[1]' (command line)"),
    ("--train.compile=maybe", "train.compile must be a bool (true/false/yes/no/1/0), got 'maybe' (command line)"),
    ("--model.coupling=afine", "model.coupling must be one of 'affine', 'additive', got 'afine' (command line)"),
    ("--train.ema_decay=high", "train.ema_decay must be a float or null, got 'high' (command line)"),
    ("--train.max_steps=1.5", "train.max_steps must be an int or null, got '1.5' (command line)"),
    ("--model.kernel=1,2", "model.kernel must be a list of 3 ints, got '1,2' (command line)"),
    ("--model.sizes=1,x", "model.sizes must be a list of ints, got '1,x' (command line)"),
    ("--model.widths=[1, 2.5]", "model.widths must be a list of ints, got '[1, 2.5]' (command line)"),
])
def test_wrong_type_on_command_line(override, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(ExperimentConfig, overrides=[override])


@pytest.mark.parametrize(("text", "expected"), [
    ("seed: abc", "seed must be an int, got 'abc'"),
    ("seed: true", "seed must be an int, got True"),
    ("name: 3", "name must be a string, got 3"),
    ("train:\n  lr: fast", "train.lr must be a float, got 'fast'"),
    ("train:\n  compile: 1", "train.compile must be a bool (true/false/yes/no/1/0), got 1"),
    ("train:\n  compile: maybe", "train.compile must be a bool (true/false/yes/no/1/0), got 'maybe'"),
    ("model:\n  coupling: spline", "model.coupling must be one of 'affine', 'additive', got 'spline'"),
    ("model:\n  kernel: 3", "model.kernel must be a list of 3 ints, got 3"),
    ("model:\n  kernel: [1, 2, 3, 4]", "model.kernel must be a list of 3 ints, got [1, 2, 3, 4]"),
    ("model:\n  sizes: 1,2", "model.sizes must be a list of ints, got '1,2'"),
    ("model:\n  widths: [1, a]", "model.widths must be a list of ints, got [1, 'a']"),
    ("train:\n  ema_decay: [0.9]", "train.ema_decay must be a float or null, got [0.9]"),
])
def test_wrong_type_in_yaml_names_key_and_file(tmp_path, text, expected):
    path = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError, match=re.escape(f"{expected} ({path})")):
        load_config(ExperimentConfig, path)


@pytest.mark.parametrize("text", ["nan", "NaN", ".nan", "inf", "-inf", ".inf", "-.inf", "1e999"])
def test_non_finite_floats_are_refused_on_the_command_line(text):
    expected = f"train.lr must be a finite number, got '{text}' (command line)"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(ExperimentConfig, overrides=[f"--train.lr={text}"])


@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf", "1e999"])
def test_non_finite_floats_are_refused_in_yaml_and_in_optional_fields(tmp_path, text):
    path = write(tmp_path, f"train:\n  ema_decay: {text}\n")
    with pytest.raises(ConfigError, match=r"train\.ema_decay must be a finite number"):
        load_config(ExperimentConfig, path)


def test_non_finite_floats_are_refused_in_dicts():
    with pytest.raises(ConfigError, match=r"train\.lr must be a finite number, got inf \(checkpoint\)"):
        config_from_dict(ExperimentConfig, {"train": {"lr": float("inf")}})


def test_literal_accepts_each_option():
    assert load_config(ExperimentConfig, overrides=["--model.coupling=additive"]).model.coupling == "additive"
    assert load_config(ExperimentConfig, overrides=["--model.coupling=affine"]).model.coupling == "affine"


@pytest.mark.parametrize("text", ["null", "none", "None", "NULL", "~"])
def test_optional_none_from_command_line(text):
    config = load_config(ExperimentConfig, overrides=[f"--train.max_steps={text}", f"--train.ema_decay={text}"])
    assert config.train.max_steps is None and config.train.ema_decay is None


def test_optional_from_yaml(tmp_path):
    config = load_config(ExperimentConfig, write(tmp_path, "train:\n  ema_decay: 0.99\n  max_steps: null\n"))
    assert config.train.ema_decay == 0.99 and config.train.max_steps is None
    restored = load_config(ExperimentConfig, overrides=["--train.ema_decay=0.5", "--train.max_steps=7"])
    assert restored.train.ema_decay == 0.5 and restored.train.max_steps == 7


@pytest.mark.parametrize("text", ["[5,7,9]", "5,7,9", "[5, 7, 9]", "5, 7, 9"])
def test_fixed_length_tuple_from_command_line(text):
    kernel = load_config(ExperimentConfig, overrides=["--model.kernel", text]).model.kernel
    assert kernel == (5, 7, 9) and isinstance(kernel, tuple)


def test_variable_length_tuple_and_list_from_command_line_and_yaml(tmp_path):
    config = load_config(ExperimentConfig, overrides=["--model.sizes=4", "--model.widths=1,2,3"])
    assert config.model.sizes == (4,) and config.model.widths == [1, 2, 3]
    assert isinstance(config.model.widths, list)
    config = load_config(ExperimentConfig, write(tmp_path, "model:\n  sizes: [1, 2, 3, 4]\n  widths: []\n"))
    assert config.model.sizes == (1, 2, 3, 4) and config.model.widths == []


@pytest.mark.parametrize(("text", "expected"), [
    ("true", True), ("True", True), ("yes", True), ("1", True),
    ("false", False), ("FALSE", False), ("no", False), ("0", False),
])
def test_bool_from_command_line(text, expected):
    assert load_config(ExperimentConfig, overrides=[f"--train.compile={text}"]).train.compile is expected


def test_strings_from_command_line_are_kept_verbatim():
    config = load_config(ExperimentConfig, overrides=["--name=007", "--train.device=true"])
    assert config.name == "007" and config.train.device == "true"


@pytest.mark.parametrize(("overrides", "message"), [
    (["--train.batch_size=0"], "train.batch_size must be positive"),
    (["--model.block.depth=0"], "model.block.depth must be at least 1"),
    (["--name="], "name must not be empty"),
])
def test_validate_is_called_on_every_section(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(ExperimentConfig, overrides=overrides)


def test_validate_runs_after_overrides_and_on_dicts(tmp_path):
    path = write(tmp_path, "train:\n  batch_size: 0\n")
    with pytest.raises(ConfigError, match=r"train\.batch_size must be positive"):
        load_config(ExperimentConfig, path)
    assert load_config(ExperimentConfig, path, ["--train.batch_size=8"]).train.batch_size == 8
    with pytest.raises(ConfigError, match=r"model\.block\.depth must be at least 1"):
        config_from_dict(ExperimentConfig, {"model": {"block": {"depth": 0}}})


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just a string\n", "42\n"])
def test_yaml_file_that_is_not_a_mapping(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(f"config file {path} must hold a mapping")):
        load_config(ExperimentConfig, path)


def test_missing_file(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"config file {path} does not exist")):
        load_config(ExperimentConfig, path)


def test_invalid_yaml(tmp_path):
    path = write(tmp_path, "model: [1, 2\n")
    with pytest.raises(ConfigError, match=re.escape(f"config file {path} is not valid YAML at line 2, column 1")):
        load_config(ExperimentConfig, path)


def test_dict_round_trip():
    config = load_config(ExperimentConfig, overrides=["--model.kernel=1,2,3", "--train.ema_decay=0.9",
                                                      "--model.block.depth=5", "--train.compile=yes"])
    values = config_to_dict(config)
    assert values["model"]["kernel"] == [1, 2, 3] and values["model"]["block"] == {"depth": 5}
    assert yaml.safe_load(yaml.safe_dump(values)) == values
    assert config_from_dict(ExperimentConfig, values) == config


def test_config_from_dict_checks_like_a_file():
    with pytest.raises(ConfigError, match=re.escape("train.lr must be a float, got 'x' (checkpoint)")):
        config_from_dict(ExperimentConfig, {"train": {"lr": "x"}})
    with pytest.raises(ConfigError, match=re.escape("unknown key 'old_key' (run.pt)")):
        config_from_dict(ExperimentConfig, {"old_key": 1}, source="run.pt")


def test_saved_config_loads_back(tmp_path):
    config = load_config(ExperimentConfig, overrides=["--name=saved", "--model.sizes=[4, 5]",
                                                      "--train.max_steps=null"])
    path = tmp_path / "resolved.yaml"
    save_config(config, path)
    assert yaml.safe_load(path.read_text())["model"]["sizes"] == [4, 5]
    assert load_config(ExperimentConfig, path) == config


def test_config_differences():
    saved = config_to_dict(ExperimentConfig())
    changed = config_to_dict(load_config(ExperimentConfig, overrides=["--train.lr=0.1", "--model.block.depth=3",
                                                                      "--seed=1"]))
    assert config_differences(saved, saved) == []
    assert config_differences(saved, changed) == ["model.block.depth", "seed", "train.lr"]
    assert config_differences({"a": {"b": 1}, "c": 2}, {"a": {"b": 1, "d": 3}}) == ["a.d", "c"]
    assert config_differences({"a": {"b": 1}}, {"a": 1}) == ["a"]


def test_unsupported_field_type_is_a_programming_error():
    with pytest.raises(TypeError, match="not supported"):
        load_config(PathConfig, overrides=["--where=/tmp"])
