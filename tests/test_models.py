"""Model shapes, dict outputs, the VAE's posterior-mean evaluation, losses."""
import pytest
import torch

from src import losses
from src.config import ModelConfig
from src.models import ConvAE, LinearVAE, build_model, count_parameters
from src.utils import UserError


def test_conv_ae_shapes_match_the_original_architecture():
    m = ConvAE(ModelConfig(name="ae"))
    out = m(torch.rand(2, 1, 128, 128))
    assert set(out) == {"x_hat", "z"}
    assert out["z"].shape == (2, 4, 32, 32)
    assert out["x_hat"].shape == (2, 1, 128, 128)
    assert 0 <= out["x_hat"].min() and out["x_hat"].max() <= 1
    # conv 1->8 (3x3), conv 8->4, convT 4->8, convT 8->1, with biases
    assert count_parameters(m) == (9 * 8 + 8) + (72 * 4 + 4) + (4 * 8 * 9 + 8) + (8 * 9 + 1)


def test_linear_vae_shapes_and_parameter_count():
    m = LinearVAE(ModelConfig(name="vae"))
    out = m(torch.rand(3, 1, 128, 128))
    assert set(out) == {"x_hat", "mu", "logvar", "z"}
    assert out["mu"].shape == out["logvar"].shape == out["z"].shape == (3, 200)
    assert out["x_hat"].shape == (3, 1, 128, 128)
    d = 128 * 128
    expected = (d * 512 + 512) + 2 * (512 * 200 + 200) + (200 * 512 + 512) + (512 * d + d)
    assert count_parameters(m) == expected


def test_shapes_follow_configuration():
    ae = build_model(ModelConfig(name="ae", image_size=32, ae_latent=2, ae_hidden=3))
    assert ae(torch.rand(1, 1, 32, 32))["z"].shape == (1, 2, 8, 8)
    vae = build_model(ModelConfig(name="vae", image_size=32, vae_latent=7, vae_hidden=16))
    assert vae(torch.rand(1, 1, 32, 32))["x_hat"].shape == (1, 1, 32, 32)
    assert vae.sample(5).shape == (5, 1, 32, 32)


def test_vae_eval_uses_posterior_mean_and_train_samples():
    torch.manual_seed(0)
    m = build_model(ModelConfig(name="vae", image_size=16, vae_hidden=8, vae_latent=4))
    x = torch.rand(2, 1, 16, 16)
    m.eval()
    a, b = m(x), m(x)
    assert torch.equal(a["z"], a["mu"]) and torch.equal(a["x_hat"], b["x_hat"])
    m.train()
    c = m(x)
    assert not torch.equal(c["z"], c["mu"])
    m.eval()
    assert not torch.equal(m(x, sample=True)["z"], a["mu"])  # the original study's (buggy) evaluation


def test_both_models_expose_latent_shape_and_take_a_generator():
    ae = build_model(ModelConfig(name="ae", image_size=16, ae_latent=3))
    vae = build_model(ModelConfig(name="vae", image_size=16, vae_hidden=8, vae_latent=5))
    x = torch.rand(4, 1, 16, 16)
    assert ae.latent_shape == (3, 4, 4) and vae.latent_shape == (5,)
    for m in (ae, vae):
        assert m(x)["z"].shape == (4, *m.latent_shape)
    # the AE draws nothing: a generator changes nothing
    assert torch.equal(ae(x, torch.Generator().manual_seed(1))["x_hat"], ae(x)["x_hat"])
    # the VAE draws eps from the generator it is given, not from torch's global one
    vae.train()
    torch.manual_seed(0)
    a = vae(x, torch.Generator().manual_seed(3))["z"]
    torch.manual_seed(99)
    b = vae(x, torch.Generator().manual_seed(3))["z"]
    assert torch.equal(a, b) and not torch.equal(a, vae(x, torch.Generator().manual_seed(4))["z"])
    # eps passed in (as the stacked trainer does) is the same draw: z = mu + eps * sigma
    eps = torch.randn((4, 5), generator=torch.Generator().manual_seed(3))
    out = vae(x, eps=eps)
    assert torch.equal(out["z"], a)
    torch.testing.assert_close(out["z"], out["mu"] + eps * torch.exp(0.5 * out["logvar"]))
    vae.eval()
    assert torch.equal(vae(x, torch.Generator().manual_seed(3))["z"], vae(x)["mu"])  # eval: the posterior mean


@pytest.mark.parametrize("bad", [{"name": "gan"}, {"image_size": 30}, {"vae_latent": 0}])
def test_bad_model_config_is_a_user_error(bad):
    with pytest.raises(UserError):
        ModelConfig(**bad)


def test_vae_loss_is_summed_per_image_and_averaged_over_batch():
    x = torch.full((2, 1, 4, 4), 0.5)
    out = {"x_hat": torch.full((2, 1, 4, 4), 0.7), "mu": torch.zeros(2, 3), "logvar": torch.zeros(2, 3)}
    parts = losses.vae_loss(out, x, recon="mse")
    assert parts["recon"].item() == pytest.approx(16 * 0.2**2)  # 16 pixels per image, not a mean
    assert parts["kl"].item() == pytest.approx(0.0)
    out["mu"] = torch.ones(2, 3)  # KL of N(1, 1) vs N(0, 1) is 0.5 per dim
    parts = losses.vae_loss(out, x, beta=2.0, recon="mse")
    assert parts["kl"].item() == pytest.approx(1.5)
    assert parts["loss"].item() == pytest.approx(16 * 0.04 + 2 * 1.5)


def test_vae_bce_matches_formula():
    x = torch.tensor([[[[1.0, 0.0]]]])
    out = {"x_hat": torch.tensor([[[[0.8, 0.1]]]]), "mu": torch.zeros(1, 1), "logvar": torch.zeros(1, 1)}
    expected = -(torch.log(torch.tensor(0.8)) + torch.log(torch.tensor(0.9)))
    assert losses.vae_loss(out, x)["recon"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_ae_loss_is_pixel_mean_mse():
    x, y = torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.5)
    assert losses.ae_loss({"x_hat": y}, x)["loss"].item() == pytest.approx(0.25)


def test_vae_bce_equals_torch_reference_on_random_values():
    torch.manual_seed(0)
    x_hat, x = torch.rand(3, 1, 8, 8).clamp(1e-6, 1 - 1e-6), torch.rand(3, 1, 8, 8)
    out = {"x_hat": x_hat, "mu": torch.zeros(3, 2), "logvar": torch.zeros(3, 2)}
    ref = torch.nn.functional.binary_cross_entropy(x_hat, x, reduction="sum") / 3
    assert losses.vae_loss(out, x)["recon"].item() == pytest.approx(ref.item(), rel=1e-5)
