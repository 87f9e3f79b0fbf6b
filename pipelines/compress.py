"""python -m pipelines.compress --model MODEL --data DATA [--preset demo|quick|paper] ... (see --help).

The generic entry: any model (a registry name, torchvision:NAME, package.module:factory) on any data
(an ImageFolder tree, CIFAR-10 batches, package.module:factory). The named pipelines are presets of it.
"""
from .cli import run_and_exit
from .presets import COMPRESS

if __name__ == "__main__":
    run_and_exit(COMPRESS)
