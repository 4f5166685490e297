"""The image decoder as it runs now beside the form it replaced, timed in one process.

    python -m benchmarks.decoder_forms [--rows 1m-pixels,12m-pixels,...] [--repeats 3]
        [--modes eager,fast] [--threads 0]

`now`: the decoder of `world_models.encoders.MultiDecoder` (channels-last feature maps from
the first layer on, and the upsampling layers in `UpsampleConv2d`'s sub-pixel form).
`before`: the same weights run as the decoder ran until issue 32: NCHW maps and
`nn.Upsample` then `nn.Conv2d`. Both compute the same function (the script checks the
outputs agree); each timing is forward, the image loss and backward over the batch's
B x T frames, the two forms alternating (A B A B ...) so that drift hits both alike.
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
from torch import nn

from agents.compiled import configure_dynamo, resolve_compile
from agents.run.cli_args import ArgParser
from benchmarks.throughput import IMAGE, ROWS, build_agent
from world_models.encoders import IMAGE_KEY, MultiDecoder
from world_models.nets import UpsampleConv2d

PIXEL_ROWS = [name for name, row in ROWS.items() if row.pixels and row.agent == "dreamerv3"]


def before_form(decoder: MultiDecoder) -> Callable[[torch.Tensor], torch.Tensor]:
    """`decoder`'s image path with its weights, as it ran before: NCHW, upsample then conv."""
    dec = copy.deepcopy(decoder)
    layers = list(dec.deconv)
    for i, layer in enumerate(layers):
        if isinstance(layer, UpsampleConv2d):
            conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                             padding=layer.padding)
            conv.load_state_dict(layer.state_dict())
            layers[i - 1:i + 1] = [nn.Upsample(scale_factor=2, mode="nearest"), conv]
    deconv = nn.Sequential(*layers)

    def forward(feat: torch.Tensor) -> torch.Tensor:
        lead = feat.shape[:-1]
        x = dec.space(feat).reshape(-1, dec.first_chans, dec.minres, dec.minres)
        x = torch.sigmoid(deconv(dec.space_norm(x)).float())
        return x.permute(0, 2, 3, 1).reshape(*lead, *x.shape[2:], x.shape[1])

    return forward


def now_form(decoder: MultiDecoder) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda feat: decoder(feat)[IMAGE_KEY]


def loss_step(form: Callable, feat: torch.Tensor, obs: dict, params: list, compile: bool
              ) -> Callable[[], None]:
    def loss() -> torch.Tensor:
        return MultiDecoder.loss({IMAGE_KEY: form(feat)}, obs)["rec_image"].mean()

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
    forms = {"before": before_form(decoder), "now": now_form(decoder)}
    with torch.no_grad():
        gap = (forms["before"](feat[:1]) - forms["now"](feat[:1])).abs().max().item()
    if gap > 1e-4:
        raise AssertionError(f"{name}: the two forms disagree by {gap:.2e}")
    compile = mode == "fast"
    params = list(decoder.parameters())
    steps = {}
    for form_name, form in forms.items():
        # `before` holds a copy of the weights; its gradients land there, not in `params`.
        owned = params if form_name == "now" else []
        steps[form_name] = loss_step(form, feat, {IMAGE_KEY: image}, owned, compile)
    return time_alternating(steps, repeats)


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgParser(description=__doc__.splitlines()[0])
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
    print("| row | mode | before s | now s | now / before |\n|---|---|---:|---:|---:|")
    for name in rows:
        for mode in modes:
            t = bench(name, mode, args.batch, args.length, args.repeats)
            print(f"| {name} | {mode} | {t['before']:.3f} | {t['now']:.3f} | "
                  f"{t['now'] / t['before']:.2f} |", flush=True)


MODES = ("eager", "fast")

if __name__ == "__main__":
    main()
