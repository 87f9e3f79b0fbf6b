"""`--config run.yaml`: RunSpec fields from a file under the flags, refused by key when unknown or of a
wrong type, and a run's own config.yaml (RunLayout.write_config, what the runner writes) reproducing
its spec; every flag's help shows its default. Only the parsing layer runs (no stage, no Ray)."""
import argparse

import pytest
import yaml

from orchestrator.run_layout import RunLayout
from orchestrator.run_spec import RunSpec
from pipelines.cli import build_parser, main, spec_from_args
from pipelines.presets import CIFAR_RESNET20, CIFAR_VGG16, PRESETS


def spec(*argv, defaults=CIFAR_RESNET20):
    return spec_from_args(build_parser(defaults).parse_args(list(argv)), defaults)


def write(tmp_path, content, name="run.yaml"):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return str(path)


def test_a_runs_config_yaml_reproduces_its_spec(tmp_path):
    profiles = tmp_path / "my_profiles"
    profiles.mkdir()
    original = spec("--run-id", "r1", "--store", str(tmp_path / "store"), "--budgets", "0.5", "0.7", "--seeds", "3",
                    "--search-steps-per-epoch", "5", "--no-progress", "--allow-miss", "--profile-dir", str(profiles))
    layout = RunLayout(str(tmp_path / "store"), "r1")
    path = layout.write_config(original.to_dict())
    text = (tmp_path / "store" / path).read_text()
    assert text.startswith("# The effective config of run r1") and "--config config.yaml" in text
    again = spec("--config", str(tmp_path / "store" / path))
    assert again == original
    assert again.budgets == (0.5, 0.7) and again.progress is False and again.profile_dirs == (str(profiles),)
    # flags given override the file: a new run from the same settings
    other = spec("--config", str(tmp_path / "store" / path), "--run-id", "r2", "--budgets", "0.8")
    assert other.run_id == "r2" and other.budgets == (0.8,) and other.seeds == (3,)


def test_precedence_preset_then_file_then_flags(tmp_path):
    config = write(tmp_path, {"search_epochs": 4, "lam": 3, "finetune_lr": 0.02, "budgets": [0.5],
                              "search_steps_per_epoch": None, "progress": True, "demo_train": 96, "store": "elsewhere"})
    s = spec("--config", config, "--budgets", "0.7", "--no-progress")
    assert s.search_epochs == 4  # the file over the demo preset's 3
    assert s.lam == 3.0 and isinstance(s.lam, float) and s.finetune_lr == 0.02  # fields without a flag
    assert s.search_steps_per_epoch is None  # null in the file over the preset's 8
    assert s.budgets == (0.7,) and s.progress is False  # flags over the file
    assert s.demo_train == 96 and s.demo_val == CIFAR_RESNET20.demo["demo_val"] and s.store == "elsewhere"
    assert spec("--config", config, "--demo-size", "64", "32", "--store", "s2").demo_train == 64
    assert spec("--config", write(tmp_path, "")).search_epochs == CIFAR_RESNET20.demo["search_epochs"]  # empty file


def one_line_exit_2(capsys, argv, defaults=CIFAR_RESNET20):
    assert main(defaults, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_unknown_keys_are_refused_naming_them_and_the_valid_ones(tmp_path, capsys):
    err = one_line_exit_2(capsys, ["--config", write(tmp_path, {"budget": [0.5], "seeds": [1], "epochs": 3})])
    assert "unknown key(s) ['budget', 'epochs']" in err and "valid keys: " in err
    assert "budgets" in err and "finetune_lr" in err and "run_id" in err


@pytest.mark.parametrize("content,message", [
    ({"search_epochs": "ten"}, "search_epochs: 'ten' must be an integer, e.g. search_epochs: 3"),
    ({"search_epochs": 2.5}, "search_epochs: 2.5 must be an integer"),
    ({"budgets": 0.5}, "budgets: 0.5 must be a list of a number, e.g. budgets: [0.5]"),
    ({"hardware": ["cpu", 3]}, "hardware: ['cpu', 3] must be a list of a string"),
    ({"multi_target": "yes"}, "multi_target: 'yes' must be true or false"),
    ({"lam": True}, "lam: True must be a number"),
    ({"store": None}, "store: None must be a string"),
    ("budgets: [0.5\nseeds: [1]\n", "is not valid YAML at line"),
    ("- 0.5\n- 0.7\n", "must be a mapping of run settings"),
    ({"pipeline": "cifar_vgg16"}, "a config of pipeline 'cifar_vgg16', not 'cifar_resnet20'"),
    ({"dataset": "cifar10"}, "dataset 'cifar10' does not match this command's 'demo'"),
])
def test_bad_configs_exit_2_naming_the_key(tmp_path, capsys, content, message):
    err = one_line_exit_2(capsys, ["--config", write(tmp_path, content)])
    assert message in err and "--config" in err, err


def test_a_missing_config_file_is_named(tmp_path, capsys):
    err = one_line_exit_2(capsys, ["--config", str(tmp_path / "nope.yaml")])
    assert "nope.yaml: no such file" in err


def test_range_checks_still_apply_to_the_file(tmp_path, capsys):
    err = one_line_exit_2(capsys, ["--config", write(tmp_path, {"search_epochs": 0})])
    assert "--search-epochs 0 must be an integer >= 1" in err


@pytest.mark.parametrize("defaults", [CIFAR_RESNET20, CIFAR_VGG16])
def test_every_flag_has_help_with_its_default(defaults):
    parser = build_parser(defaults)
    for action in parser._actions:
        if action.dest == "help" or action.help == argparse.SUPPRESS:  # a deprecated flag, not listed
            continue
        assert action.help and "(default:" in action.help, action.option_strings
    text = " ".join(parser.format_help().split())
    budgets = {p: " ".join(map(str, defaults.preset(p).get("budgets", RunSpec.budgets))) for p in PRESETS}
    assert f"(default: demo, quick: {budgets['demo']}; paper: {budgets['paper']})" in text
    assert "(default: runs)" in text and "(default: demo)" in text


@pytest.mark.parametrize("value", ["-0.1", "0.8", "nan"])
def test_budget_margin_outside_its_range_exits_2_naming_the_flag(capsys, value):
    err = one_line_exit_2(capsys, ["--budget-margin", value])
    assert f"--budget-margin {float(value)!r} must be a fraction in [0, 0.5]" in err, err


def test_budget_margin_reaches_the_search_and_a_change_redoes_only_the_search_onwards():
    from orchestrator.stages import STAGES, stages_to_redo

    assert spec("--budget-margin", "0.03").budget_margin == 0.03 and spec().budget_margin is None
    search = next(s for s in STAGES if s.name == "search")
    assert "budget_margin" in search.inputs
    assert stages_to_redo(["budget_margin"])[0] == "search"


def test_search_mode_reaches_the_search_spec_and_a_change_redoes_the_search_onwards(tmp_path, capsys):
    from haloc.search_loop import SEARCH_MODES as CORE_MODES
    from orchestrator.run_spec import SEARCH_MODES
    from orchestrator.stages import stages_to_redo

    assert SEARCH_MODES == tuple(CORE_MODES)  # the CLI's choices are the core library's modes
    # the demo presets search blockwise (measured in BENCHMARKS.md section 9); the paper's keep its search
    assert spec().search_mode == "blockwise-exact"
    for defaults in (CIFAR_RESNET20, CIFAR_VGG16):
        assert defaults.preset("paper").get("search_mode", RunSpec.search_mode) == "supernet"
        assert defaults.preset("quick")["search_mode"] == "blockwise-exact"
    assert spec("--search-mode", "supernet").search_mode == "supernet"
    assert spec("--search-mode", "blockwise-exact").search_mode == "blockwise-exact"
    assert stages_to_redo(["search_mode"])[0] == "search"
    err = one_line_exit_2(capsys, ["--config", write(tmp_path, {"search_mode": "greedy"})])
    assert "--search-mode 'greedy': use one of ('supernet', 'blockwise', 'blockwise-exact')" in err, err


def test_help_says_nothing_untrue_for_the_generic_entry():
    """`haloc run compress --help` (no model of its own): no "None" default printed, no timing claim."""
    from pipelines.presets import COMPRESS

    text = " ".join(build_parser(COMPRESS).format_help().split())
    assert "None" not in text and "(seconds" not in text, text
    assert "--input-size" not in text and "--image-size S" in text


def test_a_flag_made_from_a_knob_fills_its_field_and_its_bounds_name_the_flag(tmp_path):
    """Each knob is declared once (orchestrator.run_spec): the flag, its type and choices come from it,
    the value given lands in the field, and a value out of its bounds is refused naming that flag."""
    from haloc.errors import BadInputError
    from orchestrator.run_spec import flag_knobs, flag_of, knob_of

    names = flag_knobs()
    assert {"budgets", "seeds", "search_mode", "finetune_epochs", "pretrain_lr", "allow_miss",
            "luts_from"} <= set(names)
    assert spec("--store", str(tmp_path)).allow_miss is False  # a switch left off is not "given" as False
    for name in names:
        f = knob_of(name)
        meta = f.metadata
        if f.type == "bool":
            given, want = [], True
        elif meta["choices"]:
            given, want = [meta["choices"][-1]], meta["choices"][-1]
        elif f.type.startswith("str"):
            given, want = ["other-run"], "other-run"
        elif f.type.startswith("tuple[float"):
            given, want = ["0.4", "0.6"], (0.4, 0.6)
        elif f.type.startswith("tuple[int"):
            given, want = ["3", "4"], (3, 4)
        elif f.type.startswith("float"):
            given, want = ["0.2"], 0.2
        else:
            low = meta["at_least"] if meta["at_least"] is not None else 1
            given, want = [str(low + 2)], low + 2
        got = spec(flag_of(name), *given, "--search-epochs", "9", "--store", str(tmp_path))
        assert getattr(got, name) == (want if name != "search_epochs" else 9), name
        if meta["at_least"] is not None:
            with pytest.raises(BadInputError, match=f"^{flag_of(name)} {meta['at_least'] - 1} must be an integer"):
                spec(flag_of(name), str(meta["at_least"] - 1), "--store", str(tmp_path))
