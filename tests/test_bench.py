"""The throughput benchmark runs and reports what the speed issue asks for (timings are not tested)."""

import pytest

from major2minor import bench
from major2minor.cli import main
from major2minor.numerics import native_bf16_cpu


@pytest.mark.slow  # every method timed; the auto choice is checked below
def test_bench_reports_every_method_and_m2m_details():
    out = bench.run(batch_size=16, repeats=2, warmup=0, steps=1, methods=("erm", "drs", "m2m"), amp="none")
    assert (
        out["dtype"] == "fp32"
        and out["amp_requested"] == "none"
        and out["threads"] >= 1
        and out["matmul_peak_gflops"] > 0
    )
    assert out["flush_denormal"] is True and "flush_denormal_all_threads" in out
    for name in ("erm", "drs", "m2m"):
        entry = out["methods"][name]
        assert len(entry["all_seconds"]) == 2 and entry["seconds_per_batch"] > 0
        assert entry["gflop_per_batch"] > 0 and 0 < entry["fraction_of_matmul_peak"]
    m2m = out["methods"]["m2m"]
    assert len(m2m["translated_slots"]) == 2  # the timed batches only, not the FLOP count
    assert 0 < m2m["translation_share"] <= 1.0
    assert m2m["translation_seconds_per_slot"] > 0
    assert m2m["gflop_per_batch"] > out["methods"]["drs"]["gflop_per_batch"]  # translation adds work


def test_bench_records_what_auto_chose_and_why(monkeypatch):
    monkeypatch.setattr(bench, "choose_amp", lambda setting, device, bf16_devices: ("none", "auto: test"))
    out = bench.run(batch_size=8, repeats=1, warmup=0, steps=1, methods=("erm",))
    assert (out["amp_requested"], out["amp_reason"], out["dtype"]) == ("auto", "auto: test", "fp32")
    assert out["cpu_native_bf16"] == native_bf16_cpu()[1]  # the reason: a non-empty string on every CPU


BAD_OPTIONS = [
    (["--threads", "-1"], "--threads=-1 must be >= 0; 0 leaves torch's default."),
    (["--steps", "-1"], "--steps=-1 must be in [1, 1000]; T, gradient steps per translation; the paper uses 10."),
    (["--warmup", "-1"], "--warmup=-1 must be >= 0; untimed batches first; 0 for none, the default is 2."),
    (["--batch-size", "0"], "--batch-size=0 must be >= 1; the paper uses 128."),
    (["--batch-size", "-8"], "--batch-size=-8 must be >= 1; the paper uses 128."),
    (["--repeats", "0"], "--repeats=0 must be >= 1; the median needs at least one timed batch; the default is 5."),
    (["--methods", "erm,bogus"], "--methods='bogus' is not allowed; choose one of: erm, drs, m2m."),
    (["--methods", "erm,dsr"], "--methods='dsr' is not allowed; choose one of: erm, drs, m2m. Did you mean 'drs'?"),
    (["--device", "banana"], "--device='banana' must be cpu, cuda or cuda:N; the default is cpu."),
]


@pytest.mark.parametrize("options, message", BAD_OPTIONS, ids=[" ".join(o) for o, _ in BAD_OPTIONS])
def test_bench_refuses_a_bad_option_with_one_line_before_any_work(options, message, monkeypatch, capsys):
    def no_work(opts):
        raise AssertionError(f"the benchmark started with {opts}")

    monkeypatch.setattr(bench, "Workload", no_work)
    assert main(["bench", *options]) == 2
    assert capsys.readouterr().err == f"m2m: error: {message}\n"
