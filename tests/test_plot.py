"""``rl.plot`` on a small fake sweep whose scores are known functions of step and seed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from rl import plot

CORL_CURVES = Path(__file__).resolve().parent / "data" / "corl_finetune_curves.json"
OFFLINE, ONLINE, EVAL_EVERY = 100, 100, 50
EVAL_STEPS = [50, 100, 150, 200]  # offline phase ends at 100
SLOPE = {"cql": 0.1, "wsrl": 0.2}


def score(agent: str, step: int, seed: int) -> float:
    """cql: step/10 + seed; wsrl: step/5 + 2*seed."""
    return SLOPE[agent] * step + seed * SLOPE[agent] * 10


def write_run(
    run_dir: Path, agent: str, seed: int, dataset: str = "door-cloned-v1", last_step: int = 200
) -> Path:
    (run_dir / ".hydra").mkdir(parents=True)
    cfg = {
        "agent": {"name": agent, "gamma": 0.99},
        "env": {"name": "door", "id": "AdroitHandDoor-v1"},
        "dataset": {"name": dataset, "source": None},
        "steps": {"offline": OFFLINE, "online": ONLINE, "eval_every": EVAL_EVERY, "log_every": 25},
        "offline_ratio": 0.0,
        "seed": seed,
        "device": "cpu",
    }
    OmegaConf.save(OmegaConf.create(cfg), run_dir / ".hydra" / "config.yaml")
    with (run_dir / "metrics.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["step", "phase", "env_steps", "metric", "value"])
        for step in range(25, last_step + 1, 25):
            phase = "offline" if step <= OFFLINE else "online"
            env_steps = max(0, step - OFFLINE)
            out.writerow([step, phase, env_steps, "critic_loss", 1.0 / step])
            if step in EVAL_STEPS:
                out.writerow([step, phase, env_steps, "eval_return", 100 * score(agent, step, seed)])
                out.writerow([step, phase, env_steps, "normalized_score", score(agent, step, seed)])
    return run_dir


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    for agent in SLOPE:
        for seed in range(3):
            write_run(tmp_path / "sweep" / f"agent={agent},seed={seed}", agent, seed)
    return tmp_path / "sweep"


def table_rows(table: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]


def test_png_and_table_from_a_sweep(sweep: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    plot.main([str(sweep), "--out", str(out), "--online-at", "50"])
    with Image.open(out / "curves.png") as image:
        image.verify()
    assert (out / "curves.png").stat().st_size > 10_000
    table = (out / "table.md").read_text()
    assert table in capsys.readouterr().out
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    assert header[5:] == [
        "after offline",
        "after 50 online",
        "end of online",
        "online steps",
        "online change",
    ]
    # seeds 0, 1, 2; population std of (0, 1, 2) is 0.816, of (0, 2, 4) 1.633
    assert table_rows(table) == [
        [
            "door",
            "door-cloned-v1",
            "cql",
            "3",
            "normalized_score",
            "11.0 ± 0.8",
            "16.0 ± 0.8",
            "21.0 ± 0.8",
            "100",
            "+10.0 ± 0.0",
        ],
        [
            "door",
            "door-cloned-v1",
            "wsrl",
            "3",
            "normalized_score",
            "22.0 ± 1.6",
            "32.0 ± 1.6",
            "42.0 ± 1.6",
            "100",
            "+20.0 ± 0.0",
        ],
    ]


def test_seeds_are_aligned_on_common_steps_and_configs_split_lines(tmp_path: Path) -> None:
    for seed in range(3):
        write_run(tmp_path / f"cql-{seed}", "cql", seed, last_step=150 if seed == 2 else 200)
    other = write_run(tmp_path / "cql-ratio", "cql", 0)
    cfg = OmegaConf.load(other / ".hydra" / "config.yaml")
    cfg.offline_ratio = 0.5
    OmegaConf.save(cfg, other / ".hydra" / "config.yaml")

    panels, table = plot.build([tmp_path], online_at=[100])
    curves = {c.label: c for c in panels[0].curves}
    assert sorted(curves) == ["cql offline_ratio=0.0", "cql offline_ratio=0.5"]
    np.testing.assert_array_equal(curves["cql offline_ratio=0.0"].x, [50, 100, 150])  # seed 2 stopped at 150
    rows = {row[2]: row for row in table_rows(table)}
    assert rows["cql offline_ratio=0.0"][5:] == ["11.0 ± 0.8", "n/a", "16.0 ± 0.8", "50", "+5.0 ± 0.0"]
    assert rows["cql offline_ratio=0.5"][3:] == [
        "1",
        "normalized_score",
        "10.0 ± 0.0",
        "20.0 ± 0.0",
        "20.0 ± 0.0",
        "100",
        "+10.0 ± 0.0",
    ]


def test_env_steps_axis_keeps_the_last_offline_evaluation_at_zero(sweep: Path) -> None:
    panels, _ = plot.build([sweep], x="env_steps")
    curve = panels[0].curves[0]
    np.testing.assert_array_equal(curve.x, [0, 50, 100])
    np.testing.assert_allclose(curve.values[:, 0], [10, 11, 12])  # cql at step 100
    assert not panels[0].switches


def test_the_datasets_own_level_is_a_reference_line_on_its_normalised_score_panel(
    sweep: Path, tmp_path: Path
) -> None:
    for run in sorted(sweep.iterdir()):
        with (run / "metrics.csv").open("a", newline="") as f:
            csv.writer(f).writerow([0, "offline", 0, "dataset_normalized_score", 56.5])
    panels, _ = plot.build([sweep])
    assert [p.dataset_level for p in panels] == [56.5]
    plot.main([str(sweep), "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / "curves.png").stat().st_size > 10_000
    # A run that did not log it (older runs, no reference scores) leaves the panel without a line.
    first = sorted(sweep.iterdir())[0] / "metrics.csv"
    first.write_text("".join(line for line in first.open() if "dataset_normalized_score" not in line))
    assert [p.dataset_level for p in plot.build([sweep])[0]] == [None]


def test_eval_return_is_used_without_reference_scores(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", "cql", 0)
    lines = (run / "metrics.csv").read_text().splitlines()
    (run / "metrics.csv").write_text("\n".join(r for r in lines if "normalized_score" not in r) + "\n")
    panels, table = plot.build([run])
    assert panels[0].ylabel.startswith("eval return")
    assert table_rows(table)[0][4:6] == ["eval_return", "1000.0 ± 0.0"]


def test_success_rate_is_used_where_every_run_has_it_and_compile_does_not_split_a_line(
    tmp_path: Path,
) -> None:
    for seed in range(2):
        run = write_run(tmp_path / f"s{seed}", "cql", seed)
        lines = (run / "metrics.csv").read_text().splitlines()
        success = [
            r.replace("eval_return", "eval_success_rate").rsplit(",", 1)[0] + f",{0.4 + 0.1 * seed}"
            for r in lines
            if "eval_return" in r
        ]
        kept = [r for r in lines if "normalized_score" not in r]
        (run / "metrics.csv").write_text("\n".join(kept + success) + "\n")
        config = OmegaConf.load(run / ".hydra" / "config.yaml")
        config.compile = [False, None][seed]  # off, and auto (which stays off on a short run)
        OmegaConf.save(config, run / ".hydra" / "config.yaml")
    panels, table = plot.build([tmp_path])
    assert panels[0].ylabel == "success rate" and len(panels[0].curves) == 1
    # Two decimals for a rate: one would print 0.5 ± 0.1 for seeds at 0.4 and 0.5.
    assert table_rows(table)[0][2:6] == ["cql", "2", "eval_success_rate", "0.45 ± 0.05"]


def test_bootstrap_band_contains_the_mean_and_is_deterministic() -> None:
    values = np.random.default_rng(1).normal(size=(3, 40)) * 10
    low, high = plot.bootstrap_band(values)
    mean = values.mean(axis=0)
    assert np.all(low <= mean) and np.all(mean <= high) and np.all(low < high)
    assert np.all(low >= values.min(axis=0) - 1e-9) and np.all(high <= values.max(axis=0) + 1e-9)
    again = plot.bootstrap_band(values)
    np.testing.assert_array_equal(low, again[0])
    np.testing.assert_array_equal(high, again[1])
    np.testing.assert_array_equal(plot.bootstrap_band(values[:1]), [values[0], values[0]])


def test_corl_overlay_on_matching_datasets(sweep: Path, tmp_path: Path) -> None:
    write_run(tmp_path / "sweep" / "hammer", "cql", 0, dataset="hammer")
    corl = json.loads(CORL_CURVES.read_text())
    panels, _ = plot.build(
        [sweep], overlays=[CORL_CURVES], match={"hammer": "hammer-cloned-v1"}, overlay_steps=(1000, 2000)
    )
    door, hammer = panels
    labels = [c.label for c in door.curves]
    assert labels == ["cql", "wsrl", *(f"{algo} (CORL)" for algo in corl)]
    assert len(hammer.curves) == 1 + len(corl)
    assert door.switches == {OFFLINE, 1000}
    cql = next(c for c in door.curves if c.label == "CQL (CORL)")
    seeds = corl["CQL"]["door-cloned-v1"]
    n_offline, n_online = len(seeds[0][0]), len(seeds[0][1])
    assert cql.values.shape == (len(seeds), n_offline + n_online)
    assert cql.x[0] == 1000 / n_offline and cql.x[n_offline - 1] == 1000 and cql.x[-1] == 3000
    np.testing.assert_allclose(cql.values[:, -1], [s[1][-1] for s in seeds])
    out = tmp_path / "out"
    plot.main([str(sweep), "--out", str(out), "--overlay", str(CORL_CURVES)])
    with Image.open(out / "curves.png") as image:
        image.verify()


def test_an_overlay_row_is_read_at_our_runs_last_online_step(sweep: Path) -> None:
    corl = json.loads(CORL_CURVES.read_text())
    _, table = plot.build([sweep], online_at=[50], overlays=[CORL_CURVES], overlay_steps=(1000, 2000))
    rows = {row[2]: row for row in table_rows(table)}
    seeds = corl["IQL"]["door-cloned-v1"]
    offline = np.array([s[0][-1] for s in seeds])
    # 200 online evaluations over 2000 steps: one every 10; our runs end 100 online steps in, where
    # theirs is its 10th evaluation (index 9), and 50 steps in its 5th (index 4)
    at_50 = np.array([s[1][4] for s in seeds])
    at_100 = np.array([s[1][9] for s in seeds])
    assert rows["IQL (CORL)"] == [
        "door",
        "door-cloned-v1",
        "IQL (CORL)",
        str(len(seeds)),
        "normalized_score",
        f"{offline.mean():.1f} ± {offline.std():.1f}",
        f"{at_50.mean():.1f} ± {at_50.std():.1f}",
        f"{at_100.mean():.1f} ± {at_100.std():.1f}",
        "100",
        f"{(at_100 - offline).mean():+.1f} ± {(at_100 - offline).std():.1f}",
    ]
    assert rows["cql"][7] == "21.0 ± 0.8"  # ours unchanged by the overlay


def test_x_max_cuts_the_drawn_curves_not_the_table(sweep: Path, tmp_path: Path) -> None:
    kwargs = dict(overlays=[CORL_CURVES], overlay_steps=(1000, 2000))
    full, table = plot.build([sweep], **kwargs)
    cut, cut_table = plot.build([sweep], x_max=150, **kwargs)
    assert cut_table == table
    (door_full,), (door_cut,) = full, cut
    assert door_cut.switches == {OFFLINE}  # CORL's switch at 1000 is beyond 150
    cql = next(c for c in door_cut.curves if c.label == "cql")
    np.testing.assert_array_equal(cql.x, [50, 100, 150])
    assert all(c.x.max() <= 150 for c in door_cut.curves)
    iql_full, iql_cut = (next(c for c in p.curves if c.label == "IQL (CORL)") for p in (door_full, door_cut))
    first = iql_full.x <= 150  # CORL's offline evaluations, one every 1000 / 200 = 5 steps
    assert first.sum() == 30
    np.testing.assert_array_equal(iql_cut.values, iql_full.values[:, first])
    out = tmp_path / "out"
    plot.main([str(sweep), "--out", str(out), "--x-max", "150"])
    with pytest.raises(SystemExit):
        plot.main([str(sweep), "--out", str(out), "--x-max", "0"])


def test_no_runs_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"no runs under .*metrics.csv and .hydra/config.yaml"):
        plot.main([str(tmp_path)])


def test_missing_columns_is_an_error(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", "cql", 0)
    (run / "metrics.csv").write_text("step,metric,value\n50,normalized_score,1.0\n")
    with pytest.raises(SystemExit, match=r"metrics.csv: missing column\(s\) phase, env_steps"):
        plot.main([str(run)])


@pytest.mark.parametrize(
    "content",
    [
        "[1, 2, 3]",
        '{"CQL": [1, 2]}',
        '{"CQL": {"door-cloned-v1": [[[1.0, 2.0], 3.0]]}}',
        '{"CQL": {"door-cloned-v1": [[[1.0, 2.0], [3.0, 4.0]]]}}',
        '{"CQL": {"door-cloned-v1": [[[1.0], [3.0], 0.0], [[1.0, 2.0], [3.0], 0.0]]}}',
        "not json",
    ],
)
def test_malformed_overlay_is_an_error(sweep: Path, tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(SystemExit, match=r"rl.plot: error: overlay .*bad.json"):
        plot.main([str(sweep), "--overlay", str(bad)])


def test_last_k_averages_each_seeds_last_evaluations_within_a_phase(sweep: Path, tmp_path: Path) -> None:
    plot.main([str(sweep), "--out", str(tmp_path / "out"), "--online-at", "50", "--last", "2"])
    cql = table_rows((tmp_path / "out" / "table.md").read_text())[0]
    # cql seed s scores 0.1 * step + s. Offline evaluations at 50 and 100: mean 7.5 + s. The online
    # ones never mix with them: after 50 online steps only step 150 (15 + s), at the end 150 and 200.
    assert cql[5:] == ["8.5 ± 0.8", "16.0 ± 0.8", "18.5 ± 0.8", "100", "+10.0 ± 0.0"]
    with pytest.raises(SystemExit):
        plot.main([str(sweep), "--last", "0"])
