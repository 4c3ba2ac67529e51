"""Recovering a compressed model's accuracy: labelled fine-tuning and distillation through one training loop."""
from tuckertrt.training.loop import TrainConfig, TrainResult, train
from tuckertrt.training.recovery import RecoveryOptions, distill, finetune, recover

__all__ = ["RecoveryOptions", "TrainConfig", "TrainResult", "distill", "finetune", "recover", "train"]
