"""The stages and what a rerun with a changed spec redoes (orchestrator.stages)."""
from dataclasses import fields

from orchestrator.run_spec import RESUME_SAFE, RunSpec
from orchestrator.stages import STAGE_NAMES, STAGES, stages_to_redo


def test_every_run_spec_field_is_read_by_exactly_one_stage_or_is_resume_safe():
    claimed = [key for stage in STAGES for key in stage.inputs]
    assert len(claimed) == len(set(claimed)), "a field claimed by two stages"
    names = {f.name for f in fields(RunSpec)} - {"run_id"}
    assert names == set(claimed) | set(RESUME_SAFE), names ^ (set(claimed) | set(RESUME_SAFE))


def test_a_change_redoes_its_first_stage_and_every_later_one():
    assert stages_to_redo(["budgets"]) == ["search", "select", "finetune", "validate", "report"]
    assert stages_to_redo(["finetune_epochs", "latency_batch"]) == ["finetune", "validate", "report"]
    assert stages_to_redo(["hardware"])[0] == "profile"
    assert stages_to_redo(["demo_train"]) == list(STAGE_NAMES)  # the weights: the runner refuses it
    assert stages_to_redo([]) == [] and stages_to_redo(["address"]) == []
