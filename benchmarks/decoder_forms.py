"""The image decoder as it runs now beside the form it replaced, timed in one process.

    python -m benchmarks.decoder_forms [--rows 1m-pixels,12m-pixels,...] [--repeats 3]
        [--modes eager,fast] [--threads 0]

`now`: the decoder of `world_models.encoders.MultiDecoder` and its training loss
(`MultiDecoder.losses`: channels-last feature maps from the first layer on; nearest
upsampling + conv in the sub-pixel form of `world_models.nets.sub_pixel_phases`, the image
loss on the last layer's phases; the strided decoder's transposed convs as they are in
fp32, since their sub-pixel form did not pay there). `before`: the same weights run as the
decoder ran until issue 32: NCHW maps, and nearest upsampling then a conv
(`UpsampleConv2d`) or a stride-2 transposed conv (`ZeroInsertConvTranspose2d`, the strided
decoder); and each combination of the two changes (a sub-pixel layer's output is
channels-last whatever its input, so "sub-pixel, NCHW" is NCHW up to the first such layer;
the other forms interleave the last layer's phases and take the loss on frames). All
compute the same function (the script checks the outputs agree); each timing is forward,
the image loss and backward over the batch's B x T frames, the forms alternating
(A B C A B C ...) so that drift hits all alike.
Rows are `benchmarks.throughput`'s pixel rows; `fast` is compiled fp32, as the world-model
loss runs on CPU.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from agents.compiled import configure_dynamo, resolve_compile
from agents.run.cli_args import ArgParser, doc_summary
from benchmarks.throughput_rows import IMAGE, ROWS, build_agent
from world_models.encoders import IMAGE_KEY, MultiDecoder
from world_models.nets import UpsampleConv2d, ZeroInsertConvTranspose2d

MODES = ("eager", "fast")
UPSAMPLING = (UpsampleConv2d, ZeroInsertConvTranspose2d)
PIXEL_ROWS = [name for name, row in ROWS.items() if row.pixels and row.agent == "dreamerv3"]


def other_form(decoder: MultiDecoder, sub_pixel: bool, channels_last: bool
               ) -> Callable[[torch.Tensor], torch.Tensor]:
    """`decoder`'s image path on a copy of its weights, its upsampling layers in the
    sub-pixel form or not (upsample then conv / transposed conv), on NCHW or channels-last
    maps."""
    dec = copy.deepcopy(decoder)
    for layer in dec.deconv:
        if isinstance(layer, UPSAMPLING):
            layer.sub_pixel = sub_pixel
    layout = torch.channels_last if channels_last else torch.contiguous_format

    def forward(feat: torch.Tensor) -> torch.Tensor:
        lead = feat.shape[:-1]
        x = dec.space(feat).reshape(-1, dec.first_chans, dec.minres, dec.minres)
        x = dec.deconv(dec.space_norm(x.contiguous(memory_format=layout)))
        x = torch.sigmoid(x.float())
        return x.permute(0, 2, 3, 1).reshape(*lead, *x.shape[2:], x.shape[1])

    return forward


def forms(decoder: MultiDecoder) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """`before`, the four combinations of the two changes, and `now` (the decoder as it is:
    channels-last, sub-pixel where the layer's default says so)."""
    return {"before": other_form(decoder, sub_pixel=False, channels_last=False),
            "sub-pixel, NCHW": other_form(decoder, sub_pixel=True, channels_last=False),
            "not sub-pixel, channels-last": other_form(decoder, sub_pixel=False,
                                                        channels_last=True),
            "sub-pixel, channels-last": other_form(decoder, sub_pixel=True,
                                                   channels_last=True),
            "now": lambda feat: decoder(feat)[IMAGE_KEY]}


def image_loss(form: Callable, feat: torch.Tensor, obs: dict) -> Callable[[], torch.Tensor]:
    """The image loss of a form's decoded frames."""
    return lambda: MultiDecoder.loss({IMAGE_KEY: form(feat)}, obs)["rec_image"].mean()


def loss_step(loss: Callable[[], torch.Tensor], params: list, compile: bool
              ) -> Callable[[], None]:
    run = torch.compile(loss, dynamic=False) if compile else loss

    def step() -> None:
        for p in params:
            p.grad = None
        run().backward()

    return step


def time_alternating(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds of each step, calls alternating between them; one untimed call each."""
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench(name: str, mode: str, batch: int, length: int, repeats: int) -> dict[str, float]:
    agent = build_agent(ROWS[name], torch.device("cpu"), "fp32")
    decoder = agent.wm.decoder
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(batch, length, agent.wm.feat_dim, generator=g)
    image = torch.randint(0, 256, (batch, length, *IMAGE), dtype=torch.uint8,
                          generator=g)
    compile = mode == "fast"
    steps = {}
    obs = {IMAGE_KEY: image}
    for form_name, form in forms(decoder).items():
        with torch.no_grad():
            gap = (form(feat[:1]) - decoder(feat[:1])[IMAGE_KEY]).abs().max().item()
        if gap > 1e-4:
            raise AssertionError(f"{name}: {form_name} and now disagree by {gap:.2e}")
        # The other forms hold copies of the weights; their gradients land there.
        if form_name == "now":  # the training loss, as an update computes it
            loss = lambda: decoder.losses(feat, obs)["rec_image"].mean()  # noqa: E731
        else:
            loss = image_loss(form, feat, obs)
        owned = list(decoder.parameters()) if form_name == "now" else []
        steps[form_name] = loss_step(loss, owned, compile)
    return time_alternating(steps, repeats)


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgParser(description=doc_summary(__doc__))
    parser.add_argument("--rows", default=",".join(PIXEL_ROWS),
                        help=f"comma-separated: {', '.join(PIXEL_ROWS)}")
    parser.add_argument("--modes", default="eager,fast", help="eager and/or fast (compiled)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = all")
    args = parser.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [r for r in rows if r not in PIXEL_ROWS] + [m for m in modes if m not in MODES]
    if bad or not rows or not modes or args.repeats < 1:
        parser.error(f"bad --rows/--modes/--repeats {bad or ''}; rows: "
                     f"{', '.join(PIXEL_ROWS)}; modes: {', '.join(MODES)}; repeats >= 1")
    if "fast" in modes and not resolve_compile("auto", torch.device("cpu")):
        parser.error("mode fast needs inductor's C++ compiler (apt install g++)")
    configure_dynamo()
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f}; decoder forward + image loss + backward, "
          f"{args.batch}x{args.length} frames, median of {args.repeats} (alternating)\n")
    print("| row | mode | form | s | / before |\n|---|---|---|---:|---:|")
    for name in rows:
        for mode in modes:
            t = bench(name, mode, args.batch, args.length, args.repeats)
            for form_name, seconds in t.items():
                print(f"| {name} | {mode} | {form_name} | {seconds:.3f} | "
                      f"{seconds / t['before']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
