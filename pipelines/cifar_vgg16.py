"""python -m pipelines.cifar_vgg16 [--preset demo|paper] [--data ...] [--store ...] (see --help)."""
import sys

from .cli import main
from .presets import CIFAR_VGG16

if __name__ == "__main__":
    sys.exit(main(CIFAR_VGG16))
