"""Penalties on known weights, and the statistics of the input corruptions."""
import numpy as np
import pytest
import torch
from torch import nn

from src import noise
from src.config import RegConfig
from src.regularization import add_penalty_grad, penalized_parameters
from src.utils import UserError


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(2, 2)
        self.decoder = nn.Linear(2, 1)
        with torch.no_grad():
            self.encoder.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0]]))
            self.encoder.bias.copy_(torch.tensor([3.0, -3.0]))
            self.decoder.weight.copy_(torch.tensor([[-1.0, 4.0]]))
            self.decoder.bias.fill_(10.0)


def penalize(model, cfg):
    """What a training step does after backward: the penalty's value, its gradient added to ``.grad``."""
    l1, l2 = (torch.tensor(v) if v else None for v in cfg.lambdas)
    return add_penalty_grad(penalized_parameters(model, cfg), l1, l2).item()


def formula(model, cfg):
    """The reference: l1 * sum|w| + l2 * sum w^2 over the penalized weights, differentiable by autograd."""
    l1, l2 = cfg.lambdas
    return sum(l1 * p.abs().sum() + l2 * p.pow(2).sum() for p in penalized_parameters(model, cfg))


# weights: |w| sum = 1+2+0.5+0 + 1+4 = 8.5 ; w^2 sum = 1+4+0.25 + 1+16 = 22.25 ; biases |b| = 16, b^2 = 118
@pytest.mark.parametrize("kind,lam,expected", [
    ("none", (1.0, 1.0), 0.0),
    ("l1", (0.1, 7.0), 0.85),
    ("l2", (7.0, 0.01), 0.2225),
    ("l1+l2", (0.1, 0.01), 0.85 + 0.2225),
])
def test_penalty_values_on_known_weights(kind, lam, expected):
    assert penalize(Tiny(), RegConfig(kind=kind, l1=lam[0], l2=lam[1])) == pytest.approx(expected)


def test_penalty_bias_and_scope_options():
    assert penalize(Tiny(), RegConfig(kind="l1", l1=1.0, include_bias=True)) == pytest.approx(8.5 + 16)
    assert penalize(Tiny(), RegConfig(kind="l1", l1=1.0, scope="decoder")) == pytest.approx(5.0)
    assert penalize(Tiny(), RegConfig(kind="l2", l2=1.0, scope="encoder")) == pytest.approx(5.25)


def test_penalty_has_gradient_sign_of_weights():
    m = Tiny()
    penalize(m, RegConfig(kind="l1", l1=1.0))
    assert torch.equal(m.decoder.weight.grad, torch.tensor([[-1.0, 1.0]]))
    assert torch.equal(m.encoder.weight.grad, torch.tensor([[1.0, -1.0], [1.0, 0.0]]))  # sign(0) = 0
    assert m.decoder.bias.grad is None


@pytest.mark.parametrize("kind", ["l1", "l2", "l1+l2"])
def test_the_penalty_written_into_grad_equals_autograd_of_the_formula(kind):
    """Training adds the penalty's gradient after backward (add_penalty_grad); autograd of the plain
    formula sum|w| / sum w^2 is the reference, zero weight included (sign(0) = 0)."""
    lam = RegConfig(kind=kind, l1=0.1, l2=0.01)
    ref, got = Tiny(), Tiny()
    formula(ref, lam).backward()
    value = penalize(got, lam)
    assert value == pytest.approx(formula(Tiny(), lam).item())
    for a, b in zip(ref.parameters(), got.parameters()):
        assert (a.grad is None) == (b.grad is None)  # biases: not penalized, no gradient
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-6, atol=0)
    # a stack: a leading run axis, one lambda per run; run 1 does not use L2 (lambda 0 adds nothing)
    w = torch.stack([Tiny().encoder.weight.detach(), -2 * Tiny().encoder.weight.detach()]).requires_grad_()
    w.grad = torch.ones_like(w)  # a model gradient already there: the penalty's is added to it
    both = add_penalty_grad([w], torch.tensor([0.1, 0.2]), torch.tensor([0.01, 0.0]), runs=2)
    for g, (a1, a2) in enumerate(((0.1, 0.01), (0.2, 0.0))):
        one = w[g].detach().clone().requires_grad_()
        (a1 * one.abs().sum() + a2 * one.pow(2).sum()).backward()
        torch.testing.assert_close(w.grad[g], 1 + one.grad)
        assert both[g].item() == pytest.approx(a1 * one.abs().sum().item() + a2 * one.pow(2).sum().item())


@pytest.mark.parametrize("bad", [{"kind": "l3"}, {"l1": -1.0}, {"scope": "middle"}])
def test_bad_regularizer_is_user_error(bad):
    with pytest.raises(UserError):
        RegConfig(**bad)


def test_gaussian_noise_sigma_before_clamping_and_clamped_range():
    g = torch.Generator().manual_seed(0)
    x = torch.full((20, 1, 64, 64), 0.5)  # far from the bounds: clamping is rare at sigma 0.1
    y = noise.gaussian(x, 0.1, g)
    assert (y - x).std().item() == pytest.approx(0.1, rel=0.01)
    assert abs((y - x).mean().item()) < 2e-3
    z = noise.gaussian(torch.zeros(4, 1, 32, 32), 0.3, g)
    assert z.min() >= 0 and z.max() <= 1 and (z == 0).float().mean().item() == pytest.approx(0.5, abs=0.03)


def test_noise_is_seeded_and_target_untouched():
    x = torch.rand(2, 1, 8, 8)
    x0 = x.clone()
    a = noise.gaussian(x, 0.1, torch.Generator().manual_seed(5))
    b = noise.gaussian(x, 0.1, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and torch.equal(x, x0)
    assert noise.gaussian(x, 0.0) is x


def test_salt_and_pepper_fraction_hit():
    g = torch.Generator().manual_seed(0)
    x = torch.full((10, 1, 64, 64), 0.5)
    y = noise.salt_and_pepper(x, 0.05, g)
    hit = (y != 0.5).float().mean().item()
    assert hit == pytest.approx(0.05, abs=0.003)
    assert (y == 0).float().mean().item() == pytest.approx(0.025, abs=0.003)


def test_negative_sigma_rejected():
    with pytest.raises(ValueError):
        noise.gaussian(torch.zeros(1), -0.1)


def test_condition_names():
    assert noise.condition_name("clean", 0) == "clean"
    assert noise.condition_name("gaussian", 0.1) == "gaussian_0.1"
    assert noise.condition_name("gaussian", 0) == "clean"


def _devices() -> list[str]:
    devs = ["cpu"]
    if torch.cuda.is_available():
        devs.append("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        devs.append("mps")
    return devs


def test_eval_noise_is_drawn_on_the_cpu_whatever_the_images_device():
    x = torch.rand(3, 1, 16, 16)
    gen = noise.eval_generator(4, "gaussian_0.1")
    assert gen.device.type == "cpu"
    # the reference: the CPU stream of that (seed, condition), written out by hand
    ref = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(gen.initial_seed()))).clamp(0, 1)
    for dev in _devices():
        y = noise.corrupt(x.to(dev), "gaussian", 0.1, noise.eval_generator(4, "gaussian_0.1"))
        assert y.device.type == dev
        assert torch.allclose(y.cpu(), ref, atol=1e-6), dev  # identical noise, not just the same distribution
    # tensors without storage ("meta", as on a device without data) still get their noise from the CPU stream
    assert noise.corrupt(x.to("meta"), "gaussian", 0.1, noise.eval_generator(4, "gaussian_0.1")).device.type == "meta"


def test_eval_noise_is_keyed_by_seed_and_condition_name():
    x = torch.full((2, 1, 8, 8), 0.5)
    a = noise.corrupt(x, "gaussian", 0.1, noise.eval_generator(0, "gaussian_0.1"))
    assert torch.equal(a, noise.corrupt(x, "gaussian", 0.1, noise.eval_generator(0, "gaussian_0.1")))
    assert not torch.equal(a, noise.corrupt(x, "gaussian", 0.1, noise.eval_generator(1, "gaussian_0.1")))
    assert not torch.equal(a, noise.corrupt(x, "gaussian", 0.1, noise.eval_generator(0, "gaussian_0.2")))


def test_evaluate_scores_every_model_on_the_same_noisy_images_in_any_condition_list():
    from src.evaluation import evaluate

    class Identity(torch.nn.Module):  # x_hat = its input: the metrics measure the noise itself
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return {"x_hat": x}

    images = (torch.rand(12, 16, 16) * 255).to(torch.uint8).numpy()
    alone = evaluate(Identity(), images, [("gaussian", 0.1)], seed=3)
    among = evaluate(Identity(), images, [("clean", 0.0), ("s&p", 0.05), ("gaussian", 0.1)], seed=3)
    assert np.array_equal(alone["gaussian_0.1"]["psnr"], among["gaussian_0.1"]["psnr"])
    assert np.all(among["clean"]["mse"] == 0)
    for dev in _devices()[1:]:  # on a machine with an accelerator: the same per-image values there
        on_dev = evaluate(Identity().to(dev), images, [("gaussian", 0.1)], seed=3, device=dev)
        assert np.allclose(on_dev["gaussian_0.1"]["psnr"], alone["gaussian_0.1"]["psnr"], atol=1e-4)
