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


def test_weights_from_timm_safetensors_and_pth_with_another_channel_count(tmp_path):
    """A timm ResNet-18 state dict saved for RGB (as the hub ships it, with its classifier) loads into
    a 1-channel backbone: the first convolution summed over its channels (timm's adapt_input_conv),
    every other tensor unchanged; and the other way round."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    rgb = timm.create_model("resnet18", pretrained=False, num_classes=1000, in_chans=3)
    sd = {k: v.contiguous() for k, v in rgb.state_dict().items()}
    save_file(sd, str(tmp_path / "model.safetensors"))
    torch.save(sd, tmp_path / "model.pth")
    for f in ("model.safetensors", "model.pth"):
        gray = build_backbone({"name": "resnet18", "weights": str(tmp_path / f)}, in_chans=1)
        got = gray.model.state_dict()
        assert torch.allclose(got["conv1.weight"], sd["conv1.weight"].sum(dim=1, keepdim=True))
        assert torch.equal(got["layer4.1.bn2.weight"], sd["layer4.1.bn2.weight"])
    one = timm.create_model("resnet18", pretrained=False, num_classes=0, in_chans=1).state_dict()
    torch.save(one, tmp_path / "gray.pth")
    back = build_backbone({"name": "resnet18", "weights": str(tmp_path / "gray.pth")}, in_chans=3).model.state_dict()
    assert back["conv1.weight"].shape[1] == 3
    assert torch.allclose(back["conv1.weight"], one["conv1.weight"].repeat(1, 3, 1, 1) / 3)  # timm: repeated, × 1/3
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 32)
    with pytest.raises(SSLBenchError, match="broken.safetensors could not be read"):
        build_backbone({"name": "resnet18", "weights": str(tmp_path / "broken.safetensors")}, in_chans=3)
