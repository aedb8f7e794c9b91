"""M2m in your own training loop: a complete script, run as written by the test suite.

Data: scikit-learn's bundled 8x8 handwritten digits (no download), pixels scaled to [0, 1], made
long-tailed: 90, 64, 46, 33, 23, 17, 12, 8, 6, 4 training images for digits 0..9, and a held-out
test split of 50 images per digit.  f and g are small MLPs; g is trained first with plain ERM and
then only translates; f trains with ERM until the deferred epoch T0 and with M2m from T0 on.

    python docs/examples/own_training_loop.py        # a few seconds on one CPU thread
"""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.metrics import balanced_accuracy_score
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from major2minor import M2mConfig, M2mTranslator
from major2minor.numerics import flush_denormals

EPOCHS, T0 = 40, 30  # M2m translates from epoch T0 on (the deferred switch)
NUM_CLASSES = 10


def long_tailed_digits(seed: int = 0):
    """(x_train, y_train, x_test, y_test): float32 pixels in [0, 1], flattened to 64 features."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)  # the data's natural space; M2m clamps translations to [0, 1]
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_c = int(90 * (1 / 20) ** (c / (NUM_CLASSES - 1)))  # long tail: 90 ... 4, imbalance ratio ~22
        test.extend(idx[:50])
        train.extend(idx[50 : 50 + n_c])
    as_tensors = lambda i: (torch.from_numpy(x[i]), torch.from_numpy(y[i]).long())
    return (*as_tensors(np.array(train)), *as_tensors(np.array(test)))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, NUM_CLASSES))


def train_epoch(net, loader, optimizer, translator=None):
    """One epoch; with a translator, every batch is translated first.  Returns (accepted, slots)."""
    accepted = slots = 0
    net.train()
    for x, y in loader:
        if translator is not None:
            x, y, stats = translator(net, x, y)  # majority seeds translated into minority classes
            accepted, slots = accepted + stats.accepted, slots + stats.slots
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return accepted, slots


def main() -> dict:
    torch.set_num_threads(1)
    flush_denormals()  # before any torch work: subnormal gradients would make translation slow on a CPU
    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = long_tailed_digits()
    counts = torch.bincount(y_train, minlength=NUM_CLASSES).tolist()  # N_c, the training count per class
    print("training counts:", counts)

    dataset = TensorDataset(x_train, y_train)
    shuffled = DataLoader(dataset, batch_size=32, shuffle=True)
    # from T0 on, each batch is drawn with sample weight 1/N_y (as DRS): M2m translates those batches
    weights = 1.0 / torch.tensor(counts, dtype=torch.float)[y_train]
    oversampled = DataLoader(
        dataset, batch_size=32, sampler=WeightedRandomSampler(weights, num_samples=len(dataset), replacement=True)
    )

    # g: the same architecture trained beforehand with plain ERM on the same imbalanced data
    g = mlp()
    g_opt = torch.optim.SGD(g.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(EPOCHS):
        train_epoch(g, shuffled, g_opt)

    # Knobs for this small data set.  The paper's beta=0.999, step_size=0.1 accept 0.2% of the slots here:
    # - beta=0.99: with at most 90 images a class, beta=0.999 gives a seed weight of at most
    #   1 - 0.999^86 < 0.09, so the Bernoulli(p_seed) draw rejects nearly every slot; 0.99 gives up to 0.58;
    # - step_size=0.5: ten L2-normalised steps of 0.1 move a 64-pixel image by at most 1.0 in L2, rarely
    #   enough to make g 90% sure of another digit (1.4% accepted with beta=0.99); 0.5 allows 5.0 (11%);
    # - gamma=0.9 (g's target-class probability needed to accept) and lam=0.5, as the paper.
    translator = M2mTranslator(
        g,
        counts,
        M2mConfig(beta=0.99, lam=0.5, gamma=0.9, step_size=0.5, steps=10),
        bounds=(0.0, 1.0),
        rng=torch.Generator().manual_seed(0),
    )

    f = mlp()
    optimizer = torch.optim.SGD(f.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    total_accepted = total_slots = 0
    for epoch in range(EPOCHS):
        if epoch < T0:  # plain ERM until the deferred epoch
            train_epoch(f, shuffled, optimizer)
            continue
        if epoch == T0:
            for group in optimizer.param_groups:
                group["lr"] = 0.01  # the usual lr decay at T0
        accepted, slots = train_epoch(f, oversampled, optimizer, translator)
        total_accepted, total_slots = total_accepted + accepted, total_slots + slots
        print(f"epoch {epoch + 1}: M2m accepted {accepted} of {slots} slots ({100 * accepted / max(slots, 1):.1f}%)")

    f.eval()
    with torch.no_grad():
        predicted = f(x_test).argmax(1)
    bacc = balanced_accuracy_score(y_test.numpy(), predicted.numpy())
    acceptance = total_accepted / max(total_slots, 1)
    print(f"acceptance rate: {100 * acceptance:.1f}% ({total_accepted} of {total_slots} slots)")
    print(f"test balanced accuracy: {100 * bacc:.2f}%")
    return {"acceptance": acceptance, "accepted": total_accepted, "bacc": bacc, "g": g}


if __name__ == "__main__":
    main()
