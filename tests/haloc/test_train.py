"""KD loss, evaluation, fine-tuning on the demo set, and exact resume from a saved TrainState."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import haloc
from haloc.data import cifar10_datasets, demo_dataset, make_loader
from haloc.errors import BadInputError
from haloc.train import TrainConfig, TrainState, evaluate, finetune, kd_loss, train_one_epoch
from tests.fixtures.fake_data import write_fake_cifar10


def tiny_cnn(num_classes: int, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Dropout(dropout), nn.Linear(16, num_classes))


# ------------------------------------------------------------------------------------------------ kd_loss


def test_kd_loss_zero_weight_is_cross_entropy():
    torch.manual_seed(0)
    s, t, y = torch.randn(6, 5), torch.randn(6, 5), torch.randint(0, 5, (6,))
    torch.testing.assert_close(kd_loss(s, t, y, 0.0, 4.0), F.cross_entropy(s, y))
    torch.testing.assert_close(kd_loss(s, None, y, 0.7, 4.0), F.cross_entropy(s, y))


def test_kd_loss_soft_term():
    torch.manual_seed(1)
    s, t, y = torch.randn(6, 5), torch.randn(6, 5), torch.randint(0, 5, (6,))
    ce = F.cross_entropy(s, y)
    # Teacher equal to the student: the KL term vanishes.
    torch.testing.assert_close(kd_loss(s, s.clone(), y, 0.5, 3.0), 0.5 * ce)
    # Pure KD against the reference formula, T^2 scaled.
    T = 2.0
    ref = T**2 * (F.softmax(t / T, 1) * (F.log_softmax(t / T, 1) - F.log_softmax(s / T, 1))).sum(1).mean()
    torch.testing.assert_close(kd_loss(s, t, y, 1.0, T), ref)
    assert kd_loss(s, t, y, 1.0, T) > 0


def test_kd_loss_gradient_flows_to_student_only():
    torch.manual_seed(2)
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3, requires_grad=True)
    kd_loss(s, t, torch.tensor([0, 1, 2, 0]), 1.0, 4.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


# ------------------------------------------------------------------------------------------------ evaluate


class FixedLogits(nn.Module):
    """Returns the input row as logits (so the test chooses the ranking)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x + self.dummy


def test_evaluate_top1_top5_loss():
    logits = torch.tensor([[9., 8, 7, 6, 5, 4], [9, 8, 7, 6, 5, 4], [1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]])
    y = torch.tensor([0, 5, 5, 5])  # hit@1, miss@5, hit@1, miss@5
    loader = torch.utils.data.DataLoader(TensorDataset(logits, y), batch_size=3)
    m = evaluate(FixedLogits(), loader, "cpu")
    assert m["n"] == 4 and m["top1"] == 0.5 and m["top5"] == 0.5
    assert m["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    # Three classes: top-5 becomes top-3, always a hit.
    m3 = evaluate(FixedLogits(), torch.utils.data.DataLoader(TensorDataset(logits[:, :3], torch.tensor([0, 2, 2, 1]))))
    assert m3["top5"] == 1.0 and m3["top1"] == 0.5


# ------------------------------------------------------------------------------------------------ finetune


def test_finetune_on_demo_beats_chance_and_kd_runs():
    classes = 4
    train = make_loader(demo_dataset(256, classes, 16, seed=0, split="train"), 32, shuffle=True, seed=0)
    val = make_loader(demo_dataset(128, classes, 16, seed=0, split="val"), 64, shuffle=False)
    teacher = tiny_cnn(classes)
    cfg = TrainConfig(epochs=4, lr=0.05, kd_weight=0.0, device="cpu", log_every=0)
    before = evaluate(tiny_cnn(classes), val, "cpu")["top1"]
    res = finetune(tiny_cnn(classes), None, train, val, cfg)
    assert len(res.history) == 4 and res.state.epoch == 4 and not res.stopped_early
    assert res.final["top1"] >= 0.7 > before + 0.2  # chance is 0.25
    # KD from the trained model into a fresh student: runs, the teacher stays frozen and unchanged.
    teacher.load_state_dict(res.model.state_dict())
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    kd = finetune(tiny_cnn(classes), teacher, train, val, TrainConfig(epochs=2, lr=0.05, kd_weight=0.7,
                                                                      device="cpu", log_every=0))
    assert kd.final["top1"] >= 0.4  # soft targets of a small teacher teach slower than labels; above chance
    assert not teacher.training and all(torch.equal(v, teacher.state_dict()[k]) for k, v in frozen.items())


def test_finetune_decomposed_resnet20_with_resnet20_teacher():
    teacher = haloc.models.create("resnet20", num_classes=4).eval()
    specs = haloc.decomposable_layers(teacher)
    student = haloc.decompose(teacher, {n: max(1, s.max_rank // 2) for n, s in specs.items()})
    train = make_loader(demo_dataset(32, 4, 32), 16, shuffle=True, seed=0)
    val = make_loader(demo_dataset(16, 4, 32, split="val"), 16, shuffle=False)
    cfg = TrainConfig(epochs=1, lr=0.01, kd_weight=0.5, device="auto", max_steps_per_epoch=1, log_every=1)
    res = finetune(student, teacher, train, val, cfg)
    assert res.history[0]["train"]["steps"] == 1 and res.history[0]["train"]["n"] == 16
    assert res.final["n"] == 16 and 0 <= res.final["top1"] <= res.final["top5"] <= 1


@pytest.mark.parametrize("ranks", ["half", "none"])
def test_finetune_leaves_the_teacher_trainable_and_trains_every_student_parameter(ranks):
    """Two students from one teacher: the second one trains all its parameters too (the teacher's
    requires_grad flags are never changed), also when nothing is decomposed."""
    teacher = haloc.models.create("resnet20", num_classes=4)
    specs = haloc.decomposable_layers(teacher)
    chosen = {n: max(1, s.max_rank // 2) for n, s in specs.items()} if ranks == "half" else {}
    train = make_loader(demo_dataset(32, 4, 32), 16, shuffle=True, seed=0)
    cfg = TrainConfig(epochs=1, lr=0.01, device="cpu", max_steps_per_epoch=1, log_every=0)
    for _ in range(2):
        student = haloc.decompose(teacher, chosen)
        before = {k: v.clone() for k, v in student.named_parameters()}
        finetune(student, teacher, train, None, cfg)
        assert all(p.requires_grad for p in teacher.parameters())
        trainable = [k for k, p in student.named_parameters() if p.requires_grad]
        assert len(trainable) == len(before)
        moved = [k for k, p in student.named_parameters() if not torch.equal(p, before[k])]
        assert len(moved) >= 0.9 * len(before)  # all but parameters whose gradient happens to be zero


def test_decompose_keeps_requires_grad_and_finetune_refuses_a_frozen_student():
    teacher = haloc.models.create("resnet20", num_classes=4).requires_grad_(False)
    student = haloc.decompose(teacher, {"layer1.0.conv1": 4})
    assert not any(p.requires_grad for p in student.parameters())
    train = make_loader(demo_dataset(16, 4, 32), 16, shuffle=True, seed=0)
    with pytest.raises(BadInputError, match="no trainable parameter"):
        finetune(student, teacher, train, None, TrainConfig(epochs=1, device="cpu", log_every=0))


def _run(loader, val, cfg, stop_after=None, state=None, ckpt=None):
    def on_epoch_end(epoch, metrics, st):
        assert st.epoch == epoch + 1 and metrics["epoch"] == epoch
        if ckpt is not None:
            st.save(ckpt)
        return stop_after is not None and epoch + 1 == stop_after

    return finetune(tiny_cnn(10, dropout=0.3), None, loader, val, cfg, state=state, on_epoch_end=on_epoch_end)


def test_resume_from_checkpoint_gives_identical_weights(tmp_path):
    # Real CIFAR-format files with random crop + flip, and dropout: every RNG a resume must restore.
    write_fake_cifar10(tmp_path / "data", n_train=48, n_test=16, seed=0)
    train_ds, val_ds = cifar10_datasets(tmp_path / "data")
    val = make_loader(val_ds, 16, shuffle=False)
    cfg = TrainConfig(epochs=3, lr=0.1, kd_weight=0.0, device="cpu", seed=7, log_every=0)
    full = _run(make_loader(train_ds, 16, shuffle=True, seed=7), val, cfg)

    ckpt = tmp_path / "ckpt.pt"
    part = _run(make_loader(train_ds, 16, shuffle=True, seed=7), val, cfg, stop_after=1, ckpt=ckpt)
    assert part.stopped_early and len(part.history) == 1
    torch.manual_seed(123)  # a new process would start from another RNG state
    resumed = _run(make_loader(train_ds, 16, shuffle=True, seed=7), val, cfg, state=TrainState.load(ckpt))
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert resumed.history[-1]["train"]["loss"] == full.history[-1]["train"]["loss"]

    # A different seed really changes the run (the test above can fail).
    other = _run(make_loader(train_ds, 16, shuffle=True, seed=8), val, TrainConfig(**{**cfg.__dict__, "seed": 8}))
    assert not torch.equal(other.model[0].weight, full.model[0].weight)


def test_train_one_epoch_without_scheduler_reports_metrics():
    loader = make_loader(demo_dataset(20, 2, 8), 8, shuffle=True, seed=0)
    model = tiny_cnn(2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    m = train_one_epoch(model, None, loader, opt, None, TrainConfig(epochs=1, log_every=0))
    assert m["n"] == 20 and m["steps"] == 3 and m["lr"] == 0.01 and m["loss"] > 0


@pytest.mark.parametrize("field,value", [("epochs", 0), ("lr", 0.0), ("kd_weight", 1.5), ("kd_temperature", 0),
                                         ("momentum", 1.0), ("device", "tpu")])
def test_train_config_rejects_bad_values(field, value):
    with pytest.raises(BadInputError, match=field):
        TrainConfig(**{field: value})


def test_train_config_dict_round_trip():
    cfg = TrainConfig(epochs=3, kd_weight=0.2, max_steps_per_epoch=5)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(BadInputError, match=r"unknown key\(s\) \['epoch'\]"):
        TrainConfig.from_dict({"epoch": 3})


def test_bad_checkpoint_and_device(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(BadInputError, match="bad.pt.*not a TrainState"):
        TrainState.load(tmp_path / "bad.pt")
    with pytest.raises(BadInputError, match="does not exist"):
        TrainState.load(tmp_path / "missing.pt")
    if not torch.cuda.is_available():
        loader = make_loader(demo_dataset(8, 2, 8), 4, shuffle=False)
        with pytest.raises(BadInputError, match="no CUDA GPU"):
            finetune(tiny_cnn(2), None, loader, None, TrainConfig(epochs=1, device="cuda"))
