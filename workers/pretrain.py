"""Training the original (uncompressed) model when no pretrained weights are given, as a Ray task.

The demo preset has no pretrained weights to start from, so it trains the original model briefly on
its own data first; the report says so. Runs on a GPU node when the task is given one.
"""
from __future__ import annotations


def pretrain_original(model_name: str, data: dict, train: dict, seed: int = 0) -> tuple[dict, dict]:
    """(state dict, {"val": metrics, "epochs": n}) of `model_name` trained from scratch."""
    import torch

    import haloc
    from haloc.data import DataConfig, build_datasets, make_loader
    from haloc.train import TrainConfig, finetune

    from .data_cache import local_data_config

    torch.manual_seed(seed)
    cfg = DataConfig.from_dict(local_data_config(data))
    train_set, val_set = build_datasets(cfg)
    tcfg = TrainConfig.from_dict({**train, "kd_weight": 0.0, "seed": seed})
    model = haloc.models.create(model_name)
    result = finetune(model, None, make_loader(train_set, tcfg.batch_size, True, seed),
                      make_loader(val_set, tcfg.batch_size, False, seed), tcfg)
    state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
    return state, {"val": result.final, "epochs": tcfg.epochs}
