"""`medsam3-rt bench` runs on the tiny export and writes valid output. Benchmarks are not tests:
nothing here checks a time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli
from medsam3_bench.schema import SCHEMA_FILE, SCHEMA_ID


def test_bench_cli_against_transformers_writes_valid_json_markdown_and_plots(
    tiny_video_export: Path, tiny_video_hf_dir: Path, tmp_path: Path
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    out = tmp_path / "bench.json"
    args = [
        "bench", str(tiny_video_export), "--checkpoint", str(tiny_video_hf_dir), "--frames", "3", "--rounds", "1",
        "--warmup", "1", "--tracker-rounds", "1", "--curve", "4", "--curve-baseline", "2", "--settle", "0",
        # the random tiny model scores its queries ~0.20-0.23 on the synthetic slices: below
        # the model's own thresholds, so objects appear and the tracker runs only with a lower one
        "--detection-threshold", "0.19",
        "--json", str(out), "--markdown", str(tmp_path / "bench.md"),
        # issue 17: a lever measured in the same run (here tracker-only slices on the same export)
        "--variant", f"k2={tiny_video_export},detect_every=2",
    ]  # fmt: skip
    try:
        import matplotlib  # noqa: F401

        args += ["--plot", str(tmp_path / "bench.png")]
    except ImportError:
        pass
    proc = cli(*args, check=True)
    result = json.loads(out.read_text())
    jsonschema.validate(result, json.loads(SCHEMA_FILE.read_text()))
    assert result["schema"] == SCHEMA_ID and result["baseline"] == "transformers"
    names = [c["name"] for c in result["candidates"]]
    assert names == ["transformers", "ort-cpu", "k2"] and all(c["available"] for c in result["candidates"])
    ours = result["candidates"][1]
    assert set(ours["image"]["stages_ms"]) == {"io", "preprocess", "text", "backbone", "detector", "postprocess"}
    assert set(ours["image"]["text_cache_miss_ms"]) == {"tokenize", "text_encoder"}
    assert {"backbone", "detector", "tracker", "merge_memory", "postprocess"} <= set(ours["stream"]["stages_ms"])
    assert ours["stream"]["end_to_end_ms"]["n"] == 3 and ours["tracker_step"]["ms"]["n"] == 1
    for key in ("image_end_to_end", "stream_end_to_end", "tracker_step", "cold_start"):
        assert result["speedup_vs_baseline"]["ort-cpu"][key] > 0, key
    # same weights, same inputs: the exported graphs reproduce transformers
    agree = result["agreement_with_baseline"]["ort-cpu"]
    assert agree["image_mask_iou_mean"] > 0.99 and agree["stream_objects_equal"]
    k2 = result["candidates"][2]
    assert k2["detect_every"] == 2 and k2["model_dir"] == str(tiny_video_export) and "compute" in k2  # same export: same FLOPs
    assert result["settings"]["variants"] == [{"name": "k2", "model_dir": str(tiny_video_export), "backend": "ort-cpu", "detect_every": 2}]
    assert k2["stream"]["end_to_end_ms"]["n"] == 3 and result["speedup_vs_baseline"]["k2"]["stream_mean"] > 0
    assert result["agreement_with_baseline"]["k2"]["image_mask_iou_mean"] > 0.99  # 2D is the same export
    assert "speedup of means" in (tmp_path / "bench.md").read_text()
    curve = result["curve"]["runs"]
    assert curve["ort-cpu"]["slices"] == 4 and curve["transformers"]["slices"] == 2
    # peak RSS per stage (issue 21): every stage that ran, none above the total, the total above 0
    for c in result["candidates"]:
        mem = c["memory"]
        peaks = mem["stage_peak_rss_bytes"]
        assert {"load", "backbone", "detector", "stream_slice", "tracker_step"} <= set(peaks), (c["name"], peaks)
        assert 0 < max(peaks.values()) <= mem["peak_rss_bytes"], (c["name"], peaks, mem["peak_rss_bytes"])
    assert {"tokenize", "text_encoder", "stream_open"} <= set(ours["memory"]["stage_peak_rss_bytes"])
    assert "## Peak RSS per stage" in (tmp_path / "bench.md").read_text()
    assert "## Streaming, per slice" in proc.stdout and "speedup" in (tmp_path / "bench.md").read_text()
    if "--plot" in args:
        assert (tmp_path / "bench.png").stat().st_size > 0 and (tmp_path / "bench.curve.png").stat().st_size > 0


def test_the_baseline_follows_the_exports_prompt_semantics(tiny_video_hf_dir: Path, tmp_path: Path) -> None:
    """A default (Meta semantics) export: the baseline appends the geometry CLS too, for images and streams.

    Before, it ran transformers' semantics against Meta's graphs and reported the difference of
    the two definitions as disagreement (image IoU 0.74, stream label IoU 0 on the tiny model).
    """
    meta = tmp_path / "meta-export"
    # the baseline's tracker is transformers' Sam3VideoModel: the export's tracker follows it
    cli("export", str(tiny_video_hf_dir), "--output", str(meta), "--quiet", "--tracker-semantics", "transformers", check=True)
    assert json.loads((meta / "manifest.json").read_text())["model"]["prompt_semantics"] == "meta"
    out = tmp_path / "bench.json"
    cli(
        "bench", str(meta), "--checkpoint", str(tiny_video_hf_dir), "--baseline", "on", "--baseline-device", "cpu",
        "--frames", "3", "--rounds", "1", "--warmup", "1", "--tracker-rounds", "0", "--settle", "0",
        "--detection-threshold", "0.19", "--json", str(out), check=True,
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert "meta text-only semantics" in result["candidates"][0]["description"]
    agree = result["agreement_with_baseline"]["ort-cpu"]
    assert agree["image_mask_iou_mean"] > 0.99 and agree["image_score_max_abs_diff"] < 1e-4, agree
    assert agree["stream_label_iou_mean"] > 0.99 and agree["stream_objects_equal"], agree


def test_bench_without_baseline_stays_torch_free(tiny_video_export: Path, tmp_path: Path) -> None:
    """The runtime half of the benchmark (and the importable `benchmarks.bench`) never loads torch."""
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from pathlib import Path
from benchmarks.bench import BenchConfig, run_benchmark, to_markdown, validate
r = run_benchmark(BenchConfig(model_dir=Path({str(tiny_video_export)!r}), baseline="off", rounds=1, frames=2, warmup=0,
                              tracker_rounds=1, settle_s=0, image_hw=(96, 128), detection_threshold=0.2))
validate(r, required=False)
assert r["baseline"] is None and r["speedup_vs_baseline"] == {{}}
assert r["settings"]["stream_policy"]["thresholds_from"] == "given"
assert "ort-cpu" in to_markdown(r)
# issue 17 item 5: each 2D graph's FLOPs, the measured GEMM peak, achieved GFLOP/s per stage
assert r["hardware"]["fp32_gemm_peak_gflops"] > 0
assert r["hardware"]["int8_gemm_peak_gops"] > 0 and "int8 GEMM peak" in to_markdown(r)  # issue 17 item 3
assert set(r["graph_flops"]) == {{"image_backbone", "detector", "text_encoder"}}
assert all(g["gflop"] > 0 for g in r["graph_flops"].values())
comp = r["candidates"][0]["compute"]
bb = comp["image_backbone"]
assert abs(bb["achieved_gflops"] - r["graph_flops"]["image_backbone"]["gflop"] / (bb["stage_p50_ms"] / 1e3)) < 1e-6
assert 0 < bb["fraction_of_fp32_peak"] and "## Work and the hardware limit" in to_markdown(r)
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "medsam3_export"))
assert not bad, bad
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_bench_usage_errors(tiny_video_export: Path) -> None:
    proc = cli("bench", str(tiny_video_export), "--baseline", "maybe")
    assert proc.returncode == 2 and "--baseline" in proc.stderr
    proc = cli("bench", str(tiny_video_export), "--image-size", "big")
    assert proc.returncode == 2 and "--image-size" in proc.stderr
    proc = cli("bench", str(tiny_video_export), "--baseline-device", "gpu")
    assert proc.returncode == 2 and "--baseline-device" in proc.stderr and proc.stderr.count("\n") == 1
    for bad, words in [
        ("int8", "NAME=DIR"),
        (f"x={tiny_video_export},every=2", "unknown option"),
        (f"x={tiny_video_export},detect_every=two", "integer"),
        (f"x={tiny_video_export.parent}", "not an export directory"),
        (f"ort-cpu={tiny_video_export}", "used twice"),
        (f"x={tiny_video_export},detect_every=0", "detect_every must be >= 1"),
    ]:
        proc = cli("bench", str(tiny_video_export), "--baseline", "off", "--variant", bad)
        assert proc.returncode == 2 and words in proc.stderr and proc.stderr.count("\n") == 1, (bad, proc.stderr)


def test_missing_baseline_checkpoint_is_a_usage_error(tiny_video_export: Path) -> None:
    """An export of a real checkpoint needs --checkpoint for the baseline: the user's mistake, not a bug."""
    pytest.importorskip("transformers", reason="the transformers baseline needs the export extra")
    proc = cli("bench", str(tiny_video_export), "--baseline", "on", "--no-stream", "--rounds", "0", "--warmup", "0")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--checkpoint" in lines[0] and "internal error" not in proc.stderr


def test_both_plot_panels_colour_a_stage_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plt = pytest.importorskip("matplotlib.pyplot", reason="plots need matplotlib (the bench extra)")
    from medsam3_bench.report import write_plots
    from medsam3_bench.schema import IMAGE_STAGES, STREAM_STAGES

    def stages(names: tuple[str, ...]) -> dict:
        return {"stages_ms": {s: {"p50": 10.0 + k} for k, s in enumerate(names)}}

    cand = {"name": "ort-cpu", "available": True, "image": stages(IMAGE_STAGES), "stream": stages(STREAM_STAGES)}
    result = {
        "candidates": [cand],
        "speedup_vs_baseline": {},
        "model": {"name": "m", "source": {"format": "random", "preset": "tiny"}, "dims": {"image_size": 64}},
        "machine": {"cpu_model": "cpu"},
        "settings": {"threads": 1},
    }
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    write_plots(result, tmp_path / "p.png")
    colour: dict[str, tuple] = {}
    for ax in figures[0].axes:
        for bars in ax.containers:  # one BarContainer per stage, labelled with the stage
            st, face = bars.get_label(), bars.patches[0].get_facecolor()
            assert colour.setdefault(st, face) == face, st
    shared = set(IMAGE_STAGES) & set(STREAM_STAGES)
    assert shared <= set(colour) and len(set(colour.values())) == len(colour)
