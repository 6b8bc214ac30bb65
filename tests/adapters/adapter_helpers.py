"""Helpers shared by the adapter tests."""

from __future__ import annotations

import torch

PROFILE_DIM = 16


def randomize_experts(model, std: float = 0.2, seed: int = 1) -> None:
    """Non-zero B's (B starts at zero) so that the experts change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("lora_B"):
                p.copy_(torch.randn(p.shape, generator=g) * std)


def batch(n: int = 3, t: int = 9, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 590, (n, t), generator=g)
    return ids, torch.ones_like(ids)
