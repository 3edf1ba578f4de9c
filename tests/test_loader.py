"""loader.py: whole batches in a seeded order, and disjoint weighted shards under DDP."""

import torch

from mnist_pipeline.loader import Batches


def test_batches_cover_every_sample_once_in_seeded_order():
    x, y = torch.arange(10).float().unsqueeze(1), torch.arange(10)
    batches = list(Batches(x, y, bs=4, shuffle=True, seed=1))
    assert [len(yb) for _, yb, _ in batches] == [4, 4, 2]
    assert {w for _, _, w in batches} == {1.0}  # one process: every batch counts fully
    seen = torch.cat([yb for _, yb, _ in batches])
    assert sorted(seen.tolist()) == list(range(10))
    assert not torch.equal(seen, torch.arange(10))  # shuffled
    again = torch.cat([yb for _, yb, _ in Batches(x, y, bs=4, shuffle=True, seed=1)])
    assert torch.equal(seen, again)  # same seed, same order
    for xb, yb, _ in batches:
        assert torch.equal(xb.squeeze(1).long(), yb)  # images stay paired with labels


def test_batches_shards_are_disjoint_and_weighted():
    x, y = torch.arange(10).float().unsqueeze(1), torch.arange(10)
    loaders = [Batches(x, y, bs=4, shuffle=True, seed=3, rank=r, world=2) for r in range(2)]
    full = [yb for _, yb, _ in Batches(x, y, bs=4, shuffle=True, seed=3)]
    for i, (a, b) in enumerate(zip(*[list(loader) for loader in loaders], strict=True)):
        assert torch.equal(torch.cat([a[1], b[1]]), full[i])  # shards rebuild the global batch
        # each shard's weight is its share of the global batch times the world size
        assert a[2] == len(a[1]) * 2 / len(full[i]) and b[2] == len(b[1]) * 2 / len(full[i])
