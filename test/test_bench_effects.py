"""The TeRF Table 2 directions hold for egmt_ros's whole-frame effects on real RoadScene pairs."""

from __future__ import annotations

from egmt_ros.cli.bench_effects import main, run, summarise


def test_effect_directions_on_roadscene(data_root, tmp_path) -> None:
    table = {r["row"]: r for r in summarise(run(data_root / "roadscene", "lp", limit=6, sigma=0.05))}
    plain = table["plain"]
    assert table["ir"]["SD"] > plain["SD"] and table["ir"]["EN"] > plain["EN"] - 0.01
    assert table["vi"]["SD"] < plain["SD"]
    assert table["brighten"]["mean"] > plain["mean"] and table["darken"]["mean"] < plain["mean"]
    # illumination reduce brings over-exposed fusions closer to the visible image
    assert table["darken (over-exposed)"]["n"] >= 2
    assert table["darken (over-exposed)"]["SSIM_vi"] > table["plain (over-exposed)"]["SSIM_vi"]
    assert table["noisy"]["SSIM"] < plain["SSIM"]
    assert table["denoised"]["SSIM"] > table["noisy"]["SSIM"] and table["denoised"]["Qabf"] > table["noisy"]["Qabf"]
    assert main(["--data", str(data_root / "roadscene"), "--limit", "2", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "effects.md").read_text().count("\n|") >= 8 and (tmp_path / "effects.csv").is_file()
