"""Per-channel standardisation of uint8 images with the training split's statistics."""

from __future__ import annotations

import torch

__all__ = ["Normalize"]


class Normalize:
    """Per-channel standardisation with the training split's statistics."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        self.mean = mean.view(1, -1, 1, 1)
        self.std = std.view(1, -1, 1, 1)

    @classmethod
    def fit(cls, images: torch.Tensor, max_images: int = 4096, seed: int = 0) -> "Normalize":
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(images.shape[0], generator=g)[:max_images]
        x = images[idx].float().div_(255)
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp(min=1e-3)
        return cls(mean, std)

    def to(self, device: torch.device) -> "Normalize":
        return Normalize(self.mean.to(device), self.std.to(device))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def state_dict(self) -> dict:
        return {"mean": self.mean.flatten().cpu(), "std": self.std.flatten().cpu()}
