"""benchmarks.replay_throughput on tiny sizes: both storages fill past the wrap and sample."""

from benchmarks.replay_throughput import main


def test_both_storages_add_and_sample(capsys):
    main(["--capacity", "64", "--envs", "2", "--image", "8", "--vector", "3", "--actions", "2",
          "--batch", "2", "--length", "4", "--samples", "2"])
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: [float(x) for x in line.split()[1:]] for line in out[2:]}
    assert set(rows) == {"memory", "memmap"}
    assert all(len(r) == 4 and min(r) > 0 for r in rows.values())
