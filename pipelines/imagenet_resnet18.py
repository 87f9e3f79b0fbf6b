"""python -m pipelines.imagenet_resnet18 [--preset demo|paper] [--data ...] [--store ...] (see --help)."""
from .cli import run_and_exit
from .presets import IMAGENET_RESNET18

if __name__ == "__main__":
    run_and_exit(IMAGENET_RESNET18)
