"""The decoder's sub-pixel phases: interleaved in channels-last layout, and the training
loss taken on them (`MultiDecoder.losses`)."""

from __future__ import annotations

import pytest
import torch

from world_models.encoders import MultiDecoder
from world_models.nets import UpsampleConv2d, ZeroInsertConvTranspose2d

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def test_sub_pixel_layers_keep_channels_last_maps_channels_last():
    # The decoder runs channels-last; the phases are interleaved without leaving it, and an
    # NCHW input gives the same values (up to oneDNN's order of summation per layout).
    torch.manual_seed(0)
    for layer in (UpsampleConv2d(6, 5, 5), ZeroInsertConvTranspose2d(6, 5, 5)):
        layer.sub_pixel = True
        x = torch.randn(2, 6, 4, 7)
        out = layer(x.contiguous(memory_format=torch.channels_last))
        assert out.shape == (2, 5, 8, 14)
        assert out.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out, layer(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("strided", [True, False])
def test_decoder_training_loss_on_sub_pixel_phases_is_the_reconstruction_loss(strided):
    # `losses` takes the image loss on the last layer's phases before they are interleaved
    # (the frames cut the same way); it must be `loss(decoder(feat))`, values and gradients,
    # up to the order of the fp32 sum over pixels (the decoder's output is fp32).
    torch.manual_seed(0)
    dec = MultiDecoder(12, {"image": (16, 16, 3), "vector": (4,)}, depth=4, mults=(1, 2),
                       units=16, strided=strided).double()
    dec.deconv[-1].sub_pixel = True
    feat = torch.randn(2, 3, 12, dtype=torch.float64, requires_grad=True)
    obs = {"image": torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8),
           "vector": torch.randn(2, 3, 4)}
    expect, got = dec.loss(dec(feat), obs), dec.losses(feat, obs)
    assert list(got) == list(expect) == ["rec_image", "rec_vector"]
    for key in expect:
        assert got[key].shape == (2, 3)
        torch.testing.assert_close(got[key], expect[key], rtol=1e-6, atol=1e-6)
    # One leading dim, and the strided slice of steps the JEPA probe decoder gets.
    for f in (feat[0], feat[:, ::2]):
        sub = {k: v[0] if f.dim() == 2 else v[:, ::2] for k, v in obs.items()}
        for key, value in dec.losses(f, sub).items():
            torch.testing.assert_close(value, dec.loss(dec(f), sub)[key], rtol=1e-6, atol=1e-6)
    params = [feat, *dec.parameters()]
    g_expect = torch.autograd.grad(sum(v.sum() for v in expect.values()), params)
    g_got = torch.autograd.grad(sum(v.sum() for v in got.values()), params)
    for a, b in zip(g_got, g_expect):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
