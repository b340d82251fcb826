import pytest
import torch

from ssl_bench.backbones import BACKBONES, build_backbone
from ssl_bench.errors import SSLBenchError

# timm style: one test over a representative set of architectures, at the sizes recipes use.
MODELS = ["resnet18", "resnet50", "convnext_nano", "efficientnet_b0", "mobilenetv3_small_100"]


@pytest.mark.parametrize("small", [True, False])
@pytest.mark.parametrize("name", MODELS)
def test_backbone_forward_on_real_images(name, small, breast, retina):
    from tests.conftest import real_batch

    for data in (breast, retina):
        x, _ = real_batch(data, n=4, size=64 if name != "resnet18" else 28)
        m = build_backbone({"name": name, "small_image_stem": small}, in_chans=data.channels)
        m.eval()
        with torch.no_grad():
            f = m(x)
        assert f.shape == (4, m.num_features)
        assert torch.isfinite(f).all()


def test_small_stem_keeps_resolution():
    m = build_backbone({"name": "resnet18", "small_image_stem": True}, in_chans=1)
    assert m.model.conv1.kernel_size == (3, 3) and m.model.conv1.stride == (1, 1)
    assert isinstance(m.model.maxpool, torch.nn.Identity)


def test_unknown_backbone_and_bad_option():
    with pytest.raises(SSLBenchError, match=r"unknown backbone 'resnet181'.*did you mean"):
        BACKBONES.check({"name": "resnet181"}, key="backbone")
    with pytest.raises(SSLBenchError, match=r"unknown recipe key backbone\.pretrained"):
        BACKBONES.check({"name": "resnet18", "pretrained": True}, key="backbone")
    with pytest.raises(SSLBenchError, match="not supported"):
        build_backbone({"name": "vit_tiny_patch16_224", "small_image_stem": True}, in_chans=3)


def test_weights_from_local_file_and_run_checkpoint(tmp_path):
    a = build_backbone({"name": "resnet18", "small_image_stem": True}, in_chans=1)
    torch.save(a.model.state_dict(), tmp_path / "plain.pt")
    torch.save({"objective": {f"backbone.{k}": v for k, v in a.state_dict().items()}}, tmp_path / "ckpt.pt")
    for f in ("plain.pt", "ckpt.pt"):
        torch.manual_seed(123)
        b = build_backbone({"name": "resnet18", "small_image_stem": True, "weights": str(tmp_path / f)}, in_chans=1)
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(va, vb), k
    with pytest.raises(SSLBenchError, match="weights file not found"):
        build_backbone({"name": "resnet18", "weights": str(tmp_path / "none.pt")}, in_chans=1)
    with pytest.raises(SSLBenchError, match="do not fit"):
        build_backbone({"name": "resnet50", "weights": str(tmp_path / "plain.pt")}, in_chans=1)
