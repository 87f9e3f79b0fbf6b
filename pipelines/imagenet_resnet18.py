"""python -m pipelines.imagenet_resnet18 [--preset demo|paper] [--data ...] [--store ...] (see --help)."""
import sys

from .cli import main
from .presets import IMAGENET_RESNET18

if __name__ == "__main__":
    sys.exit(main(IMAGENET_RESNET18))
