"""The routing commands through ``gateway.cli.main`` and a real ``python -m gateway`` process.

Fixtures (``tests/routing/fixtures/``) are small and crafted so the expected numbers are known:

* ``labelled.jsonl``: 10 rows, the weak tier wrong on 4 (short prompts), the strong tier wrong on
  1 (the longest prompt). Oracle APGR = 1.05, prompt length APGR = -0.05 exactly.
* ``judged.jsonl``: 6 rows of 1-10 judge scores; oracle APGR = 1.1875.
* ``traffic.jsonl``: precomputed scores per tenant (acme, beta with counts, untagged rows).
* ``calibrate.yaml``: a config with comments, priced tiers and tenants acme and beta.
* ``train.jsonl``: 40 synthetic word problems for a training round trip.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.config import ConfigError, load_config
from gateway.progress import ProgressBar
from gateway.routing.calibration import calibrate_budget, calibrate_share
from gateway.routing.classifier import DifficultyClassifier
from gateway.routing.rows import CommandError
from gateway.routing.thresholds_yaml import set_yaml_value, write_thresholds

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]
LABELLED = str(FIXTURES / "labelled.jsonl")
JUDGED = str(FIXTURES / "judged.jsonl")
TRAFFIC = str(FIXTURES / "traffic.jsonl")
CONFIG = FIXTURES / "calibrate.yaml"


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def routers(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in report["routers"]}


def test_help_lists_the_routing_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("train-router", "eval-router", "classify", "calibrate"):
        assert f"    {command}" in out


# --- eval-router ------------------------------------------------------------------------------


def test_eval_router_json_gives_exact_apgr_for_the_known_oracle_and_baselines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_main(
        capsys, "eval-router", "--data", LABELLED, JUDGED, "--json", "--bootstrap", "0"
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["weights"]["version"] == "router-v1"
    labelled, judged = doc["sets"]
    assert labelled["name"] == "labelled.jsonl" and labelled["rows"] == 10
    r = routers(labelled)
    assert r["oracle"]["apgr"] == 1.05
    assert (r["oracle"]["cpt50"], r["oracle"]["cpt80"]) == (0.15, 0.24)
    assert r["random"]["apgr"] == 0.5
    assert (r["random"]["cpt50"], r["random"]["cpt80"]) == (0.5, 0.8)
    # the longest prompt is the one the strong tier gets wrong: worse than random
    assert r["prompt length"]["apgr"] == -0.05
    assert (r["prompt length"]["cpt50"], r["prompt length"]["cpt80"]) == (0.85, 0.94)
    assert (r["oracle"]["weak_quality"], r["oracle"]["strong_quality"]) == (0.6, 0.9)
    assert -0.1 <= r["router router-v1"]["apgr"] <= 1.05
    assert routers(judged)["oracle"]["apgr"] == 1.1875
    assert labelled["apgr_95ci"] is None


def test_eval_router_table_names_every_router_and_the_interval(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_main(capsys, "eval-router", "--data", LABELLED, "--bootstrap", "200")
    assert code == 0
    lines = out.splitlines()
    oracle = next(line for line in lines if " oracle " in line)
    assert oracle.split()[-4:] == ["10", "1.050", "15.0%", "24.0%"]
    assert any("prompt length" in line and "-0.050" in line for line in lines)
    assert any("95% bootstrap interval" in line for line in lines)


def test_eval_router_names_the_file_and_line_of_a_bad_row(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"prompt": "a", "weak_correct": true, "strong_correct": false}\n\n'
        '{"prompt": "b", "weak_correct": true}\n'
    )
    code, out, err = run_main(capsys, "eval-router", "--data", str(bad))
    assert code == 2 and out == ""
    assert f"{bad}:3: " in err and '"weak_correct" without "strong_correct"' in err


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "a row must be a JSON object, got a list"),
        ('{"weak_correct": true, "strong_correct": true}', 'needs "prompt"'),
        ('{"prompt": 5, "weak_correct": true, "strong_correct": true}', '"prompt" must be a str'),
        ('{"prompt": "x", "weak_correct": "yes", "strong_correct": true}', "true or false"),
        ('{"prompt": "x", "weak_score": "9", "strong_score": 7}', '"weak_score" must be a number'),
        ('{"prompt": "x"}', "needs labels"),
    ],
)
def test_train_and_eval_explain_what_is_wrong_with_a_row(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(line + "\n")
    for command in ("eval-router", "train-router"):
        extra = ["--out", str(tmp_path / "w.json")] if command == "train-router" else []
        code, _, err = run_main(capsys, command, "--data", str(path), *extra)
        assert code == 2
        assert f"{path}:1: " in err and message in err
    assert not (tmp_path / "w.json").exists()


def test_a_missing_file_or_weights_file_is_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_main(capsys, "eval-router", "--data", str(tmp_path / "nope.jsonl"))
    assert code == 2 and "no such file" in err and "nope.jsonl" in err
    code, _, err = run_main(
        capsys, "eval-router", "--data", LABELLED, "--weights", str(tmp_path / "w.json")
    )
    assert code == 2 and "no weights file" in err
    junk = tmp_path / "junk.json"
    junk.write_text('{"format": "something else"}')
    code, _, err = run_main(capsys, "classify", "--jsonl", LABELLED, "--weights", str(junk))
    assert code == 2 and "not a weights file" in err


def test_eval_router_says_when_pgr_is_undefined(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "tied.jsonl"
    path.write_text('{"prompt": "x", "weak_correct": true, "strong_correct": true}\n')
    code, _, err = run_main(capsys, "eval-router", "--data", str(path))
    assert code == 2 and "tied.jsonl" in err and "PGR is undefined" in err


# --- classify ---------------------------------------------------------------------------------


def expected_scores() -> dict[int, float]:
    clf = DifficultyClassifier.load()
    out = {}
    for line in (FIXTURES / "prompts.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            messages = row.get("messages") or [{"role": "user", "content": row["prompt"]}]
            out[row["id"]] = round(clf.score(messages, bool(row.get("tools"))).score, 6)
    return out


def test_classify_in_a_real_process_adds_the_servers_score_to_every_row() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "classify", "--jsonl", "-", "--explain"],
        input=(FIXTURES / "prompts.jsonl").read_text(encoding="utf-8"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        encoding="utf-8",
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]  # blank lines skipped, order kept
    assert {r["id"]: r["score"] for r in rows} == expected_scores()
    assert rows[2]["prompt"].startswith("三年前")  # written back as UTF-8, not \u escapes
    assert all(isinstance(r["top_features"], list) for r in rows)
    assert rows[1]["top_features"] and all(len(f) == 2 for f in rows[1]["top_features"])


def test_classify_writes_out_and_leaves_no_half_file_on_a_bad_row(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "scored.jsonl"
    code, stdout, err = run_main(
        capsys, "classify", "--jsonl", str(FIXTURES / "prompts.jsonl"), "--out", str(out)
    )
    assert code == 0 and stdout == "" and "classified 7 row(s)" in err
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert {r["id"]: r["score"] for r in rows} == expected_scores()
    assert "top_features" not in rows[0]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"text": "no prompt"}\n')
    code, _, err = run_main(capsys, "classify", "--jsonl", str(bad), "--out", str(out))
    assert code == 2 and "bad.jsonl: line 2:" in err and '"prompt"' in err
    assert len(out.read_text(encoding="utf-8").splitlines()) == 7  # the old output untouched


# --- train-router -----------------------------------------------------------------------------


def test_train_router_writes_weights_the_gateway_loads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pytest.importorskip("sklearn")
    out = tmp_path / "weights" / "mine.json"
    code, stdout, err = run_main(
        capsys,
        "train-router",
        "--data",
        str(FIXTURES / "train.jsonl"),
        "--out",
        str(out),
        "--version",
        "fixture-v1",
    )
    assert code == 0, err
    assert f"wrote {out} (fixture-v1): 40 rows" in stdout
    clf = DifficultyClassifier.load(out)
    assert clf.version == "fixture-v1"
    assert clf.document["training"]["rows"] == 40
    assert clf.document["training"]["files"] == ["train.jsonl"]
    assert 0.0 <= clf.score_text("Tom has 3 marbles. How many marbles are there now?").score <= 1
    # stderr is not a terminal here: plain progress lines, no carriage returns
    assert "\r" not in err
    assert "features: 40/40 (100%" in err and "calibrating: 5/5 (100%" in err


def test_train_router_refuses_too_few_rows(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_main(
        capsys, "train-router", "--data", LABELLED, "--out", str(tmp_path / "w.json")
    )
    assert code == 2 and "10 labelled row(s)" in err and "at least 20" in err


def test_train_router_without_scikit_learn_names_the_fix(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # as if it were not installed
    code, _, err = run_main(
        capsys,
        "train-router",
        "--data",
        str(FIXTURES / "train.jsonl"),
        "--out",
        str(tmp_path / "w.json"),
    )
    assert code == 2
    assert "pip install 'switchboard-gateway[train]'" in err
    assert ".venv/bin/pip install scikit-learn" in err
    assert not (tmp_path / "w.json").exists()


def test_train_router_refuses_rows_with_nothing_to_learn(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "same.jsonl"
    path.write_text(
        "".join(
            json.dumps({"prompt": f"q{i}", "weak_correct": True, "strong_correct": i % 2 == 0})
            + "\n"
            for i in range(25)
        )
    )
    out = tmp_path / "w.json"
    code, _, err = run_main(capsys, "train-router", "--data", str(path), "--out", str(out))
    assert code == 2 and "weak tier is right on every row" in err and not out.exists()


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_redraws_one_line_per_stage_on_a_terminal() -> None:
    stream = FakeTerminal()
    bar = ProgressBar(stream, width=10, clock=lambda: 0.0)
    for i in range(5):
        bar("features", i, 4)
    bar("calibrate", 0, 2)
    bar("calibrate", 1, 2)
    bar.close()
    lines = stream.getvalue().split("\n")
    assert lines[0].count("\r") == 5 and lines[0].endswith("[##########] 4/4 100%   0.0s")
    assert lines[1].startswith("\rcalibrating [") and lines[1].endswith("1/2  50%   0.0s")
    assert lines[2] == ""  # close() ended the unfinished line


def test_progress_bar_prints_plain_lines_every_tenth_elsewhere() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, clock=lambda: 0.0)
    for i in range(101):
        bar("features", i, 100)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11 and "\r" not in stream.getvalue()
    assert (
        lines[0] == "features: 0/100 (0%, 0.0s)" and lines[-1] == "features: 100/100 (100%, 0.0s)"
    )


# --- calibrate: thresholds --------------------------------------------------------------------


def calibrations(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, dict[str, Any]]:
    code, out, err = run_main(capsys, "calibrate", "--data", TRAFFIC, "--json", *argv)
    assert code == 0, err
    return {c["tenant"]: c for c in json.loads(out)["calibrations"]}


def test_calibrate_share_picks_the_threshold_between_two_scores_per_tenant(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = calibrations(capsys, "--target-large-share", "0.3")
    assert list(result) == ["acme", "beta", "*"]
    # acme: 0.9, 0.8 then a tie at 0.7 that would make 40%: the cut is above the tie
    assert (result["acme"]["threshold"], result["acme"]["large_share"]) == (0.75, 0.2)
    # beta: counts 1 / 3 / 6 at 0.9 / 0.5 / 0.2: only the first fits under 30%
    assert (result["beta"]["threshold"], result["beta"]["large_share"]) == (0.7, 0.1)
    assert result["beta"]["requests"] == 10
    assert (result["*"]["threshold"], result["*"]["large_share"]) == (0.5, 0.25)
    assert all(c["met"] for c in result.values())


def test_calibrate_share_edges() -> None:
    assert calibrate_share("t", [0.9, 0.1], [1, 1], 1.0).threshold == 0.0
    none = calibrate_share("t", [0.9, 0.1], [1, 1], 0.0)
    assert (none.threshold, none.large_share, none.met) == (0.95, 0.0, True)
    # a score of 1.0 cannot be kept off the large tier: the target is reported as missed
    stuck = calibrate_share("t", [1.0, 0.2], [1, 1], 0.0)
    assert (stuck.threshold, stuck.large_share, stuck.met) == (1.0, 0.5, False)
    assert calibrate_share("t", [0.61, 0.6], [1, 1], 0.5).threshold == 0.605


def test_calibrate_budget_spends_at_most_the_budget(capsys: pytest.CaptureFixture[str]) -> None:
    # acme: 10 rows of 1 request in 3 days = 10 a month each; a large request costs
    # 700 * $10/M + 100 * $30/M = $0.01, a small one nothing: $0.10 a month per row
    result = calibrations(
        capsys,
        "--monthly-budget",
        "0.25",
        "--period-days",
        "3",
        "--config",
        str(CONFIG),
        "--tenant",
        "acme",
    )
    acme = result["acme"]
    assert list(result) == ["acme"]
    assert (acme["threshold"], acme["large_share"], acme["monthly_usd"]) == (0.75, 0.2, 0.2)
    assert (acme["all_small_usd"], acme["all_large_usd"], acme["requests"]) == (0.0, 1.0, 100.0)


def test_calibrate_budget_of_zero_sends_nothing_large() -> None:
    from decimal import Decimal

    result = calibrate_budget(
        "t", [0.8, 0.2], [1, 1], [Decimal(0)] * 2, [Decimal("0.5"), Decimal("0.5")], Decimal(0)
    )
    assert (result.threshold, result.large_share, result.met) == (0.9, 0.0, True)


def test_calibrate_budget_below_the_all_small_cost_is_reported_as_missed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        CONFIG.read_text().replace(
            "price: { input_usd_per_mtok: 0, output_usd_per_mtok: 0 }",
            "price: { input_usd_per_mtok: 1, output_usd_per_mtok: 1 }",
        )
    )
    argv = ["--monthly-budget", "0.001", "--period-days", "30", "--config", str(config)]
    code, out, err = run_main(capsys, "calibrate", "--data", TRAFFIC, "--tenant", "acme", *argv)
    assert code == 0
    assert out.splitlines()[2].split() == [
        "acme", "10", "10", "0.95", "0.0%", "0.01", "0.01", "0.10", "target", "not", "met",
    ]  # fmt: skip
    assert "tenant acme: no threshold meets the target" in err


def test_calibrate_budget_prices_counted_tokens(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from gateway.tokens import TokenCounter

    prompt = "Where is my parcel? It has been two weeks."
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"tenant": "acme", "prompt": prompt, "score": 0.5}) + "\n")
    code, out, err = run_main(
        capsys,
        "calibrate",
        "--data",
        str(path),
        "--monthly-budget",
        "100",
        "--period-days",
        "30",
        "--output-tokens",
        "10",
        "--config",
        str(CONFIG),
        "--json",
    )
    assert code == 0, err
    tokens = TokenCounter().count_messages([{"role": "user", "content": prompt}], "fixture-large")
    (acme,) = json.loads(out)["calibrations"]
    assert acme["all_large_usd"] == pytest.approx((tokens * 10 + 10 * 30) / 1e6)


def test_calibrate_scores_rows_without_a_score(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_main(
        capsys,
        "calibrate",
        "--data",
        str(FIXTURES / "prompts.jsonl"),
        "--target-large-share",
        "0.5",
        "--json",
    )
    assert code == 0, err
    (everyone,) = json.loads(out)["calibrations"]
    scores = sorted(expected_scores().values(), reverse=True)
    assert everyone["tenant"] == "*" and everyone["rows"] == 7
    assert scores[3] < everyone["threshold"] < scores[2]  # 3 of 7 under a 50% cap


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target-large-share", "30"], "share of requests in [0, 1]"),
        (["--monthly-budget", "10", "--config", str(CONFIG)], "--period-days"),
        (["--monthly-budget", "10", "--period-days", "7"], "needs --config"),
        (["--target-large-share", "0.3", "--write"], "--write needs --config"),
        (["--target-large-share", "0.3", "--tenant", "nobody"], "no rows of tenant 'nobody'"),
    ],
)
def test_calibrate_flag_mistakes_say_what_to_do(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run_main(capsys, "calibrate", "--data", TRAFFIC, *argv)
    assert code == 2 and message in err


def test_calibrate_rejects_tenants_the_config_does_not_know_before_writing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "gateway.yaml"
    shutil.copy(CONFIG, config)
    traffic = tmp_path / "traffic.jsonl"
    traffic.write_text(
        Path(TRAFFIC).read_text()
        + json.dumps({"tenant": "ghost", "prompt": "boo", "score": 0.3})
        + "\n"
    )
    argv = ["calibrate", "--data", str(traffic), "--target-large-share", "0.3"]
    code, _, err = run_main(capsys, *argv, "--config", str(config), "--write")
    assert code == 2
    assert (
        "not in" in err and "ghost" in err and "acme, beta" in err and "nothing was written" in err
    )
    assert config.read_bytes() == CONFIG.read_bytes()
    # without --write it is a warning beside the table
    code, out, err = run_main(capsys, *argv, "--config", str(config))
    assert code == 0 and "warning" in err and "ghost" in out


# --- calibrate: writing the config ------------------------------------------------------------


def test_calibrate_write_keeps_comments_and_layout_and_the_file_loads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "gateway.yaml"
    shutil.copy(CONFIG, config)
    code, _, err = run_main(
        capsys,
        "calibrate",
        "--data",
        TRAFFIC,
        "--target-large-share",
        "0.3",
        "--config",
        str(config),
        "--write",
    )
    assert code == 0, err
    note = f"# gateway calibrate {datetime.now(UTC).date()}: at most 30.0% large on traffic.jsonl"
    expected = (
        CONFIG.read_text()
        .replace(
            "  default: small   # no rules\n",
            f"  default: small   # no rules\n  classifier:\n    threshold: 0.5  {note}\n",
        )
        .replace(
            "    allow_pin: false\n",
            f"    allow_pin: false\n    routing_threshold: 0.75  {note}\n",
        )
        .replace("routing_threshold: 0.5  # hand-tuned", "routing_threshold: 0.7  # hand-tuned")
    )
    assert config.read_text() == expected
    loaded = load_config(config).config
    assert loaded.tenants["acme"].routing_threshold == 0.75
    assert loaded.tenants["beta"].routing_threshold == 0.7
    assert loaded.router.classifier is not None and loaded.router.classifier.threshold == 0.5
    assert "turned it on" in err

    # a second run replaces its own notes instead of piling them up
    code, _, _ = run_main(
        capsys, "calibrate", "--data", TRAFFIC, "--target-large-share", "0.3",
        "--config", str(config), "--write",
    )  # fmt: skip
    assert code == 0 and config.read_text() == expected


def test_write_thresholds_restores_the_file_when_it_does_not_load(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    shutil.copy(CONFIG, config)

    def refuse(path: Path) -> object:
        assert "routing_threshold: 0.25" in path.read_text()  # it was written...
        raise ConfigError(f"{path}: $.tenants.acme.routing_threshold: nope")

    with pytest.raises(CommandError, match="was restored: .*nope"):
        write_thresholds(config, {"acme": 0.25}, load=refuse)
    assert config.read_bytes() == CONFIG.read_bytes()  # ...and put back


YAML = """\
# top
router:
  default: small
tenants:
  a:
    keys: []
    # a's last comment
  'it''s':
    keys: []
# before admin
admin: {}
"""


def test_set_yaml_value_inserts_at_the_end_of_the_block_and_quotes_nothing_else() -> None:
    text = set_yaml_value(YAML, ["tenants", "a", "routing_threshold"], "0.3")
    assert text == YAML.replace(
        "    # a's last comment\n", "    # a's last comment\n    routing_threshold: 0.3\n"
    )
    text = set_yaml_value(YAML, ["tenants", "it's", "routing_threshold"], "0.4", comment="c")
    assert text == YAML.replace(
        "    keys: []\n# before admin",
        "    keys: []\n    routing_threshold: 0.4  # c\n# before admin",
    )
    text = set_yaml_value(YAML, ["router", "classifier", "threshold"], "0.5")
    assert "  default: small\n  classifier:\n    threshold: 0.5\ntenants:" in text


def test_set_yaml_value_keeps_crlf_and_a_missing_final_newline() -> None:
    text = "tenants:\r\n  a:\r\n    keys: []"
    assert (
        set_yaml_value(text, ["tenants", "a", "routing_threshold"], "0.3")
        == "tenants:\r\n  a:\r\n    keys: []\r\n    routing_threshold: 0.3\r\n"
    )


def test_set_yaml_value_replaces_null_mappings_and_refuses_flow_style() -> None:
    text = "router:\n  default: small\n  classifier: ~  # on\n"
    assert set_yaml_value(text, ["router", "classifier", "threshold"], "0.5") == (
        "router:\n  default: small\n  classifier:  # on\n    threshold: 0.5\n"
    )
    flow = "tenants:\n  a: { keys: [] }\n"
    with pytest.raises(CommandError, match=r"tenants\.a is written in flow style"):
        set_yaml_value(flow, ["tenants", "a", "routing_threshold"], "0.3")
