"""python -m pipelines.cifar_vgg16 [--preset demo|paper] [--data ...] [--store ...] (see --help)."""
from .cli import run_and_exit
from .presets import CIFAR_VGG16

if __name__ == "__main__":
    run_and_exit(CIFAR_VGG16)
