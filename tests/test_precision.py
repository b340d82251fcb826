"""train.precision: auto resolves to bf16-mixed where the hardware has bf16; positive selection and
the losses stay fp32 inside the autocast region (what the bf16 speed-up must not change)."""

import pytest
import torch

from ssl_bench.device import has_bf16, resolve_precision
from ssl_bench.recipe import TrainConfig, load_recipe
from ssl_bench.selectors.base import topk_excluding_self
from ssl_bench.selectors.tracin import tracin_matrix
from tests.helpers import breast_recipe, real_batch, real_step

needs_bf16 = pytest.mark.skipif(not has_bf16(torch.device("cpu")),
                                reason="this CPU has no native bf16 (avx512_bf16 / amx_bf16)")


def test_auto_is_the_default_and_resolves_by_the_hardware():
    assert TrainConfig().precision == "auto"
    # recipe.yaml keeps auto
    assert load_recipe(data=breast_recipe(train={"epochs": 1})).cfg["train"]["precision"] == "auto"
    cpu = torch.device("cpu")
    flags = open("/proc/cpuinfo").read()
    expected = "bf16-mixed" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "32-true"
    assert resolve_precision("auto", cpu) == expected
    assert resolve_precision("32-true", cpu) == "32-true" and resolve_precision("bf16-mixed", cpu) == "bf16-mixed"
    assert resolve_precision("auto", torch.device("meta")) == "32-true"  # a device without bf16: fp32


@needs_bf16
def test_tracin_top1_under_bf16_equals_the_fp32_top1_of_the_same_activations(breast):
    """The forward runs in bf16; the selector's Gram matrices run in fp32 on its activations: the
    positives it chose are the fp32 arg-max of TracIn computed here from those activations (bf16
    GEMMs inside the autocast region chose other positives for some anchors)."""
    cfg = breast_recipe(selector={"name": "tracin", "views": "train", "symmetric": False},
                        train={"precision": "bf16-mixed", "batch_size": 128})
    step, _ = real_step(cfg)
    seen = []
    loss = step.objective.loss

    def spy(out, extra=None, weight=1.0):
        seen.append((out, extra, torch.is_autocast_cpu_enabled()))
        return loss(out, extra, weight)

    step.objective.loss = spy
    for s in range(3):
        step(real_batch(breast, 128, seed=s), lr=0.05, step=s)
    for out, extra, autocast_on in seen:
        v1, v2 = out.views
        assert v1.p.dtype == v1.a.dtype == v2.t.dtype == torch.float32 and not autocast_on  # fp32 maths
        fp32 = topk_excluding_self(tracin_matrix(v1.p.double(), v2.t.double(), v1.a.double(), lr=0.05), 1)
        assert torch.equal(extra, fp32)


@pytest.mark.slow
@needs_bf16
def test_bf16_steps_are_deterministic_and_differ_from_fp32(breast):
    """Same seed, same numbers: two bf16 runs of three steps give bit-identical losses (what resume
    relies on); fp32 gives others (the forward really runs in bf16)."""

    def losses(precision):
        step, _ = real_step(breast_recipe(train={"precision": precision}))
        return [float(step(real_batch(breast, 32, seed=s), lr=0.05, step=s).loss) for s in range(3)]

    a, b = losses("bf16-mixed"), losses("bf16-mixed")
    assert a == b
    assert losses("32-true") != a


def test_show_prints_what_auto_resolves_to_and_run_records_it(tmp_path):
    from click.testing import CliRunner

    from ssl_bench.cli import main
    from tests.test_cli import BREAST

    res = CliRunner().invoke(main, ["show", BREAST])
    assert res.exit_code == 0
    assert (f"# train.precision auto resolves to {resolve_precision('auto', torch.device('cpu'))} "
            "on this machine (cpu)" in res.output)
    assert "precision: auto" in res.output
    res = CliRunner().invoke(main, ["show", BREAST, "--set", "train.precision=32-true"])
    assert "resolves to" not in res.output
