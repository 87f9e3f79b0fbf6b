"""python -m pipelines.cifar_resnet20 [--preset demo|paper] [--data ...] [--store ...] (see --help)."""
from .cli import run_and_exit
from .presets import CIFAR_RESNET20

if __name__ == "__main__":
    run_and_exit(CIFAR_RESNET20)
