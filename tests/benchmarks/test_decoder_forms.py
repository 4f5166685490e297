from benchmarks.decoder_forms import main


def test_every_decoder_form_computes_the_same_and_is_timed(capsys):
    # Tiny batch: each form must agree with the decoder as it is (the script raises
    # otherwise) and print a time; speed is the benchmark's business, not the test's.
    main(["--rows", "1m-pixels,1m-pixels-strided", "--modes", "eager", "--batch", "2",
          "--length", "2", "--repeats", "1", "--threads", "1"])
    rows = [[c.strip() for c in ln.split("|")[1:-1]] for ln in capsys.readouterr().out
            .splitlines() if ln.startswith("| 1m")]
    forms = ["before", "sub-pixel, NCHW", "not sub-pixel, channels-last",
             "sub-pixel, channels-last", "now"]
    assert [(r[0], r[2]) for r in rows] == [(row, f) for row in ("1m-pixels",
                                                                 "1m-pixels-strided")
                                            for f in forms]
    assert all(float(r[3]) > 0 for r in rows)
