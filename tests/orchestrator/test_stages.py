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


def test_every_knob_lands_where_its_declaration_says_in_the_stage_specs():
    """A knob's `to` names a field of a stage's own spec (a typo would be a TypeError or a value
    silently dropped): the specs the stages build from one RunSpec carry each such value there."""
    from dataclasses import asdict

    from orchestrator.run_spec import knob_of
    from orchestrator.stages import FinetuneStage, RunContext, SearchStage, ValidateStage, WeightsStage

    spec = RunSpec(pipeline="cifar_resnet20", model="resnet20", dataset="demo", data=None, store="/tmp/s",
                   run_id="r", preset="demo", num_classes=7, image_size=32, hardware=("cpu", "asic"),
                   budgets=(0.4, 0.6),
                   search_epochs=5, finetune_epochs=4, finetune_lr=0.03, pretrain_lr=0.02, pretrain_rounds=2,
                   latency_batch=2, multi_target=True, search_mode="blockwise", finetune_init="hosvd")
    ctx = RunContext(spec=spec, layout=None, manifest=None, console=None, profiles={})
    built = {st.name: asdict(st.spec(ctx)) for st in (WeightsStage(), SearchStage(), FinetuneStage(), ValidateStage())}
    checked = 0
    for f in fields(RunSpec):
        for target in knob_of(f.name).metadata["to"]:
            stage, *path = target.split(".")
            node = built[stage]
            for key in path:
                node = node[key]
            assert node == getattr(spec, f.name), (f.name, target)
            checked += 1
    assert checked >= 30 and built["search"]["joint"] is True and built["finetune"]["train"]["lr"] == 0.03
