"""Where the uint8 training split lives during training, and how a step's images reach the device.

``train.data_on`` (recipe key):

* ``device`` — the whole split is copied to the training device once; a step gathers its images
  there.  Fastest on a GPU when the split fits, and what CPU training always does (host memory *is*
  the device).
* ``host`` — the split stays in host memory (for the image adapters: the memory-mapped decode
  cache, so pages are read on demand and shared between processes).  Each step gathers its
  (rank's) images into pinned memory and copies them to the GPU asynchronously on a side stream
  while the previous step computes; a data-parallel rank touches only its own slice.  For
  datasets larger than device memory (ChestX-ray14 at 224 px is 5.6 GB per GPU; a MIMIC-CXR-sized
  set ~57 GB).
* ``auto`` — ``device`` when the split takes at most :data:`AUTO_DEVICE_FRACTION` of the device's
  free memory, else ``host``; always ``device`` on a CPU (host memory is the device there; ``host``
  on a CPU reads each batch one step ahead, in the order a GPU run does, with no copy to overlap).

Both modes draw the same random numbers and feed the step identical uint8 batches, so they train
to the same weights (``tests/test_train_data_on.py``).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Literal, Optional

import torch

__all__ = ["AUTO_DEVICE_FRACTION", "resolve_data_on", "BatchFeed"]

DataOn = Literal["device", "host", "auto"]
# ``auto`` keeps the split on the device when it takes at most this share of the free device memory
# (the rest is for activations, optimiser state and the evaluation)
AUTO_DEVICE_FRACTION = 0.5


def resolve_data_on(data_on: str, nbytes: int, device: torch.device) -> str:
    """``device`` or ``host`` for ``train.data_on`` given the split's size in bytes."""
    if data_on != "auto":
        return data_on
    if device.type == "cpu":
        return "device"  # host memory is the device: nothing to copy
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return "device" if nbytes <= AUTO_DEVICE_FRACTION * free else "host"
    return "device"


class BatchFeed:
    """The training split's images on the device or in host memory; ``gather(idx)`` → uint8 batch on
    the device.  With ``host`` on a GPU, :meth:`stream` copies the next step's images while the
    current step runs."""

    def __init__(self, images: torch.Tensor, device: torch.device, data_on: str = "auto"):
        self.device = device
        self.mode = resolve_data_on(data_on, images.numel() * images.element_size(), device)
        self.images = images.to(device) if self.mode == "device" else images
        # host mode reads one step ahead (on a GPU the copy overlaps the step; on a CPU the same
        # order of work, so that CPU tests cover what a GPU run does)
        self._ahead = self.mode == "host"
        self._copy_stream = torch.cuda.Stream(device) if self._ahead and device.type == "cuda" else None

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        """uint8 images ``idx`` (dataset indices), on the training device."""
        if self.mode == "device":
            return self.images[idx.to(self.device)]
        batch = self.images[idx.cpu()]  # only these rows are read (memory map: only their pages)
        if self.device.type == "cpu":
            return batch
        return batch.pin_memory().to(self.device, non_blocking=True)

    def _start(self, idx: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.cuda.Event]]:
        """Begin moving batch ``idx`` to the device on the copy stream; returns (tensor, ready event)."""
        if self._copy_stream is None:
            return self.gather(idx), None
        pinned = torch.empty((len(idx), *self.images.shape[1:]), dtype=self.images.dtype, pin_memory=True)
        torch.index_select(self.images, 0, idx.cpu(), out=pinned)
        with torch.cuda.stream(self._copy_stream):
            out = pinned.to(self.device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(self._copy_stream)
        return out, ready

    def stream(self, items: Iterable[tuple[Any, tuple]]) -> Iterator[tuple]:
        """For each ``(item, indices)`` of ``items`` yield ``(item, batches)``: ``batches`` are ``gather``
        of each index tensor of ``indices`` (``None`` entries stay ``None``).  In host mode on a GPU the
        next item's batches are already being copied while the caller works on this one."""
        if not self._ahead:
            for item, indices in items:
                yield item, tuple(None if i is None else self.gather(i) for i in indices)
            return
        it = iter(items)

        def start(item, indices):
            return item, [None if i is None else self._start(i) for i in indices]

        pending = next((start(*nxt) for nxt in it), None)
        while pending is not None:
            item, started = pending
            pending = next((start(*nxt) for nxt in it), None)  # the next batch's copy overlaps this step
            current = torch.cuda.current_stream(self.device) if self._copy_stream is not None else None
            ready = []
            for s in started:
                if s is None or s[1] is None:
                    ready.append(None if s is None else s[0])
                    continue
                tensor, event = s
                current.wait_event(event)
                tensor.record_stream(current)  # the copy stream's allocation is used on this stream
                ready.append(tensor)
            yield item, tuple(ready)
