"""Built-in data sets; importing this package registers them in ``DATASETS``.

The paper's: cifar10-lt, cifar100-lt, celeba5, sun397, twitter-pos, reuters, imagenet-lt
(plus the embedded digits-lt); your own data: folder, csv, npz.
"""

from major2minor.data.datasets import celeba, cifar, digits, folder, imagenet_lt, reuters, sun397, table, twitter  # noqa: F401
