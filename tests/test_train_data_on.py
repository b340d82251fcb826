"""``train.data_on``: the training split on the device or in host memory trains to the same weights."""

import json

import pytest
import torch

from ssl_bench.data.feed import AUTO_DEVICE_FRACTION, BatchFeed, resolve_data_on
from ssl_bench.recipe import load_recipe
from ssl_bench.train import build_components, run
from tests.data.layouts import ham_rows, write_ham10000


@pytest.fixture(scope="module")
def ham_folder(tmp_path_factory):
    """96 real HAM10000 JPEGs in the HAM10000 layout, with their lesion groups (MICLe partners)."""
    return write_ham10000(tmp_path_factory.mktemp("ham") / "ham", ham_rows(96))


def _recipe(root, data_on: str, selector: dict):
    return load_recipe(data={
        "name": "data_on",
        "data": {"name": "isic", "root": str(root), "size": 24, "split_ratios": [0.7, 0.1, 0.2]},
        "augment": {"name": "byol"},
        "backbone": {"name": "resnet18", "small_image_stem": True, "stem_pool": True},
        "objective": {"name": "byol", "hidden_dim": 128, "projection_dim": 64},
        "selector": selector,
        "train": {"epochs": 2, "batch_size": 16, "threads": 1, "data_on": data_on},
        "evaluate": [],
    })


@pytest.mark.slow
@pytest.mark.parametrize("selector", [{"name": "micle", "mode": "replace"}, {"name": "tracin", "views": "light"}])
def test_host_mode_trains_to_the_same_weights_as_device_mode(ham_folder, tmp_path, selector):
    """Host mode reads each step's images one step ahead (the GPU prefetch order; MICLe's partner
    images for view 2 too); the losses and final weights are bit-identical to device mode."""
    threads = torch.get_num_threads()
    try:
        dirs = {m: run(_recipe(ham_folder, m, selector), out=tmp_path / m, progress=False, log=lambda *a: None)
                for m in ("device", "host")}
    finally:
        torch.set_num_threads(threads)
    losses = {m: [json.loads(x)["loss"] for x in (d / "metrics.jsonl").read_text().splitlines()]
              for m, d in dirs.items()}
    assert len(losses["host"]) == 2 and losses["host"] == losses["device"]
    weights = {m: torch.load(d / "checkpoints" / "last.pt", weights_only=True)["objective"] for m, d in dirs.items()}
    assert weights["host"].keys() == weights["device"].keys()
    assert all(torch.equal(weights["host"][k], weights["device"][k]) for k in weights["host"])
    # and training moved the weights (the comparison is not between two untouched models)
    torch.manual_seed(0)  # what run() does before building: the same initial weights
    init = build_components(_recipe(ham_folder, "device", selector)).objective.state_dict()
    assert not torch.equal(init["backbone.model.conv1.weight"], weights["host"]["backbone.model.conv1.weight"])


def test_feed_gathers_the_same_batches_in_both_modes():
    images = torch.randint(0, 255, (40, 3, 8, 8), dtype=torch.uint8)
    plans = [(torch.tensor([3, 1, 7]), torch.tensor([0, 2, 5])), (torch.tensor([9, 8, 30]), None)]
    got = {}
    for mode in ("device", "host"):
        feed = BatchFeed(images, torch.device("cpu"), mode)
        assert feed.mode == mode
        got[mode] = [(item, batches) for item, batches in feed.stream((p, p) for p in plans)]
    for (pa, ba), (pb, bb) in zip(got["device"], got["host"]):
        assert pa is pb
        assert torch.equal(ba[0], images[pa[0]]) and torch.equal(bb[0], images[pa[0]])
        assert (ba[1] is None) == (pa[1] is None) == (bb[1] is None)
        if pa[1] is not None:
            assert torch.equal(ba[1], images[pa[1]]) and torch.equal(bb[1], images[pa[1]])


def test_auto_keeps_the_split_on_a_cpu_device_and_names_the_rule():
    assert resolve_data_on("auto", 10**12, torch.device("cpu")) == "device"  # host memory is the device
    assert resolve_data_on("host", 10, torch.device("cpu")) == "host"
    assert 0 < AUTO_DEVICE_FRACTION < 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_on_cuda_picks_host_for_a_split_larger_than_the_rule():
    dev = torch.device("cuda")
    free, _ = torch.cuda.mem_get_info(dev)
    assert resolve_data_on("auto", int(free * AUTO_DEVICE_FRACTION) + 1, dev) == "host"
    assert resolve_data_on("auto", 1024, dev) == "device"
    images = torch.randint(0, 255, (64, 3, 16, 16), dtype=torch.uint8)
    feed = BatchFeed(images, dev, "host")
    plans = [(torch.arange(i, i + 8), None) for i in range(0, 64, 8)]
    for p, (x, none) in feed.stream((p, p) for p in plans):
        assert none is None and x.device.type == "cuda" and torch.equal(x.cpu(), images[p[0]])
