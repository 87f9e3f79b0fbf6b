"""python -m pipelines.cifar_resnet20 [--preset demo|paper] [--data ...] [--store ...] (see --help)."""
import sys

from .cli import main
from .presets import CIFAR_RESNET20

if __name__ == "__main__":
    sys.exit(main(CIFAR_RESNET20))
