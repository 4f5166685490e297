import pytest

from benchmarks.throughput import BenchmarkArgError, main, parse_modes, parse_rows
from benchmarks.throughput_rows import ROWS


def test_parse_rows_all_and_errors():
    rows = parse_rows("all")
    assert "jepa-1m-pixels" in rows and "1m-pixels" in rows and "peer-state" not in rows
    assert parse_rows("1m-state, collect") == ["1m-state", "collect"]
    assert parse_rows("all,peer-state")[-1] == "peer-state"
    # The JEPA study's row differs from 1m-pixels-strided by the agent only.
    study, recon = ROWS["jepa-1m-pixels-strided"], ROWS["1m-pixels-strided"]
    assert (study.agent, recon.agent) == ("jepa", "dreamerv3")
    assert (study.size, study.pixels, study.sets) == (recon.size, recon.pixels, recon.sets)
    with pytest.raises(BenchmarkArgError, match="unknown row.*allowed"):
        parse_rows("2m-state")
    assert parse_modes("fast") == ["fast"]
    with pytest.raises(BenchmarkArgError,
                       match="allowed.*eager, fast, fast-convfp32, fast-convbf16"):
        parse_modes("eager,slow")


def test_tiny_rows_print_agent_params_and_seconds(capsys):
    # Tiny batches: checks that each agent builds, updates and acts, not its speed.
    main(["--rows", "1m-state,jepa-1m-pixels", "--batch", "2", "--length", "4",
          "--updates", "1", "--warmup", "0", "--policy-calls", "1", "--threads", "1",
          "--device", "cpu", "--modes", "eager"])
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("| ")]
    by_row = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[1:-1]]
              for ln in lines[1:]}
    assert by_row["1m-state"][1:3] == ["dreamerv3", "state"]
    assert by_row["jepa-1m-pixels"][1:3] == ["jepa", "pixels"]
    for cells in by_row.values():
        assert cells[3].endswith("M") and float(cells[3][:-1]) > 0
        assert cells[5] == "eager" and float(cells[6]) > 0  # GFLOP per update
        assert float(cells[8]) > 0 and float(cells[12]) > 0  # s / update, policy ms
        # % of the bf16 peak only where this CPU has one (emulated bf16 has none).
        assert cells[10].endswith("%") and (cells[11].endswith("%") or cells[11] == "-")
    assert "matmul peak" in out and "GB/s" in out
    assert "CPU " in out and "flags:" in out


def test_vit_row_times_a_finetuned_pretrained_encoder(capsys):
    # The ViT row is the CNN row with `--encoder jepa:PATH --encoder-mode finetune`: the
    # encoder trains with the agent, so every update runs it forward and backward.
    import torch

    from benchmarks.throughput_rows import build_agent

    row, cnn = ROWS["vit-finetune-1m-pixels-strided"], ROWS["1m-pixels-strided"]
    assert (row.size, row.pixels, row.sets) == (cnn.size, cnn.pixels, cnn.sets)
    assert "vit-finetune-1m-pixels-strided" not in parse_rows("all")
    encoder = build_agent(row, torch.device("cpu"), "fp32").wm.encoder
    assert encoder.finetuned and encoder.cached_dim == 0
    main(["--rows", "vit-finetune-1m-pixels-strided", "--batch", "2", "--length", "4",
          "--updates", "1", "--warmup", "0", "--policy-calls", "1", "--threads", "1",
          "--device", "cpu", "--modes", "eager", "--parts"])
    out = capsys.readouterr().out
    cells = [c.strip() for c in next(ln for ln in out.splitlines()
                                     if ln.startswith("| vit-finetune")).split("|")[1:-1]]
    assert cells[1:3] == ["dreamerv3", "pixels"] and float(cells[8]) > 0
    assert "| vit-finetune-1m-pixels-strided | encoder | eager |" in out


def test_parts_time_the_image_encoder_and_decoder_alone(capsys):
    main(["--rows", "1m-state,1m-pixels", "--batch", "2", "--length", "4", "--updates", "1",
          "--warmup", "0", "--policy-calls", "1", "--threads", "1", "--device", "cpu",
          "--modes", "eager", "--parts", "--set", "model.encoder.depth=2",
          "--set", "model.decoder.depth=2"])
    out = capsys.readouterr().out
    parts = [[c.strip() for c in ln.split("|")[1:-1]] for ln in out.split("Image parts")[1]
             .splitlines() if ln.startswith("| 1m")]
    # Pixel rows only: the state row has no image part.
    assert [(p[0], p[1], p[2]) for p in parts] == [("1m-pixels", "encoder", "eager"),
                                                   ("1m-pixels", "decoder", "eager")]
    for cells in parts:
        assert float(cells[3]) >= 0 and float(cells[5]) > 0  # GFLOP (tiny here), seconds


def test_set_overrides_every_row_and_bad_keys_are_refused(capsys):
    tiny = ["--batch", "2", "--length", "4", "--updates", "1", "--warmup", "0",
            "--policy-calls", "1", "--threads", "1", "--device", "cpu", "--modes", "eager"]
    main(["--rows", "1m-pixels", *tiny, "--set", "model.encoder.depth=2",
          "--set", "model.decoder.depth=2"])
    out = capsys.readouterr().out
    assert "Every row with model.encoder.depth=2 model.decoder.depth=2" in out
    small = float(next(ln for ln in out.splitlines() if ln.startswith("| 1m-pixels"))
                  .split("|")[4].strip()[:-1])
    main(["--rows", "1m-pixels", *tiny])
    default = float(next(ln for ln in capsys.readouterr().out.splitlines()
                         if ln.startswith("| 1m-pixels")).split("|")[4].strip()[:-1])
    assert small < default  # a narrower CNN: fewer world-model parameters
    with pytest.raises(SystemExit):
        main(["--rows", "1m-pixels", *tiny, "--set", "model.encoder.dept=2"])
    assert "model.encoder.depth" in capsys.readouterr().err


def test_the_bf16_conv_mode_sets_conv_precision():
    # `fast-convbf16` / `fast-convfp32` are the fast path with conv_precision=bf16 / fp32
    # (`fast` has the default, auto): bf16 conv stacks where the fast path runs bf16,
    # labelled so in the table.
    import torch

    from agents.runtime import cpu_has_bf16
    from benchmarks.throughput import mode_label, mode_sets
    from benchmarks.throughput_rows import build_agent

    assert mode_sets("fast-convbf16", ["a=1"]) == ["a=1", "conv_precision=bf16"]
    assert mode_sets("fast-convfp32", ["a=1"]) == ["a=1", "conv_precision=fp32"]
    assert mode_sets("fast", ["a=1"]) == ["a=1"]
    cpu = torch.device("cpu")
    row = ROWS["jepa-1m-pixels-strided"]
    assert build_agent(row, cpu, "bf16", mode_sets("fast-convbf16", [])).conv_bf16
    assert not build_agent(row, cpu, "bf16", mode_sets("fast-convfp32", [])).conv_bf16
    assert build_agent(row, cpu, "bf16", mode_sets("fast", [])).conv_bf16 == cpu_has_bf16()
    assert not build_agent(row, cpu, "fp32", mode_sets("fast-convbf16", [])).conv_bf16
    label = {"mode": "fast-convbf16", "precision": "bf16", "compiled": True, "conv_bf16": True}
    assert mode_label(label) == "fast (bf16, compiled, bf16 convs)"
    assert mode_label({**label, "conv_bf16": False}) == "fast (bf16, compiled)"
