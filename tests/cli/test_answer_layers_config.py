"""The ``answers:`` and ``semantic_cache:`` config: a tenant's answers file is checked at load
(file and line named, through ``gateway config check`` too), its model must exist (the error
names ``gateway answers train``), and bad values name the ``$.path`` and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, parse_config
from gateway.pipeline.semantic import tenant_policies
from gateway.runtime import build_answer_layers
from tests.support.gateway_server import TEST_CONFIG, gateway_env, load_test_config

REPO = Path(__file__).resolve().parents[2]
GATEWAY = Path(sys.executable).parent / "gateway"
EXAMPLE = REPO / "config" / "answers" / "example.jsonl"


def with_tenant_block(block: str, config: str = TEST_CONFIG) -> str:
    """TEST_CONFIG with ``block`` (indented YAML) added to tenant acme."""
    return config.replace(
        "    store_request_text: true\n", "    store_request_text: true\n" + block
    )


def answers_block(file: Path, model: Path) -> str:
    return f"    answers:\n      file: {file}\n      model: {model}\n"


def load(text: str, **env: str) -> None:
    parse_config(text, source="test.yaml", env=gateway_env("http://127.0.0.1:9", **env))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The example answers file and the model ``gateway answers train`` writes for it."""
    pytest.importorskip("sklearn")
    model = tmp_path_factory.mktemp("model") / "example.npz"
    result = subprocess.run(
        [str(GATEWAY), "answers", "train", "--data", str(EXAMPLE), "--out", str(model)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return EXAMPLE, model


def broken_file(tmp_path: Path, mutate: str) -> tuple[Path, int]:
    """The example file with one problem; the line the loader must name."""
    lines = EXAMPLE.read_text("utf-8").splitlines()
    if mutate == "duplicate":
        lines.append(lines[2])
        line = len(lines)
    elif mutate == "empty examples":
        row = json.loads(lines[3])
        row["examples"] = []
        lines[3] = json.dumps(row, ensure_ascii=False)
        line = 4
    else:  # unknown placeholder
        row = json.loads(lines[1])
        row["answer"] += " {order_idd}"
        lines[1] = json.dumps(row, ensure_ascii=False)
        line = 2
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path, line


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        ("duplicate", "duplicate intent 'return_policy'"),
        ("empty examples", '"examples" must be a non-empty list'),
        ("unknown placeholder", "unknown placeholder {order_idd}"),
    ],
)
def test_a_bad_answers_file_is_rejected_at_load_naming_the_file_and_line(
    tmp_path: Path, trained: tuple[Path, Path], mutate: str, message: str
) -> None:
    path, line = broken_file(tmp_path, mutate)

    with pytest.raises(ConfigError) as caught:
        load(with_tenant_block(answers_block(path, trained[1])))

    text = str(caught.value)
    assert text.startswith(f"test.yaml: $.tenants.acme.answers.file: {path}:{line}: ")
    assert message in text


def test_a_missing_model_names_the_training_command(tmp_path: Path) -> None:
    missing = tmp_path / "acme.npz"
    with pytest.raises(ConfigError) as caught:
        load(with_tenant_block(answers_block(EXAMPLE, missing)))
    assert "$.tenants.acme.answers.model" in str(caught.value)
    assert f"gateway answers train --data {EXAMPLE} --out {missing}" in str(caught.value)


def test_a_value_for_an_undeclared_placeholder_is_rejected(trained: tuple[Path, Path]) -> None:
    block = answers_block(*trained) + "      values: { opening_hours: '9-5' }\n"
    with pytest.raises(ConfigError) as caught:
        load(with_tenant_block(block))
    assert "$.tenants.acme.answers.values: opening_hours is not a placeholder" in str(caught.value)
    assert "order_id, support_hours, tracking_url" in str(caught.value)


def test_semantic_cache_settings_are_typed_and_unknown_fields_rejected() -> None:
    with pytest.raises(ConfigError) as unknown:
        load(with_tenant_block("    semantic_cache: { enabled: true, treshold: 0.9 }\n"))
    with pytest.raises(ConfigError) as out_of_range:
        load(with_tenant_block("    semantic_cache: { enabled: true, threshold: 1.5 }\n"))
    with pytest.raises(ConfigError) as secret:
        load(with_tenant_block("    semantic_cache: { enabled: true, secret_env: 'a b' }\n"))

    assert "$.tenants.acme.semantic_cache" in str(unknown.value)
    assert "treshold" in str(unknown.value)
    assert "$.tenants.acme.semantic_cache.threshold" in str(out_of_range.value)
    assert "never the secret itself" in str(secret.value)


def test_a_tenant_overrides_the_semantic_cache_defaults_and_others_stay_off() -> None:
    text = with_tenant_block("    semantic_cache: { enabled: true, threshold: 0.9 }\n").replace(
        "admin:\n", "semantic_cache: { ttl_s: 60, personalised: true }\nadmin:\n", 1
    )
    loaded = load_test_config(gateway_env("http://127.0.0.1:9"), text)

    policies = tenant_policies(loaded.config)
    assert set(policies) == {"acme"}
    assert (policies["acme"].threshold, policies["acme"].ttl_s) == (0.9, 60)
    assert policies["acme"].personalised is True


def test_an_unset_semantic_secret_is_an_error_naming_the_variable() -> None:
    text = with_tenant_block("    semantic_cache: { enabled: true, secret_env: SEM_SECRET }\n")
    env = gateway_env("http://127.0.0.1:9")
    loaded = load_test_config(env, text)

    with pytest.raises(ConfigError) as caught:
        build_answer_layers(loaded, env)
    _, secrets = build_answer_layers(loaded, {**env, "SEM_SECRET": "s" * 32})

    assert "$.tenants.acme.semantic_cache.secret_env" in str(caught.value)
    assert "SEM_SECRET is not set" in str(caught.value)
    assert secrets == {"acme": b"s" * 32}


def check(path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    return subprocess.run(
        [str(GATEWAY), "config", "check", str(path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_config_check_lists_the_answer_layers_and_names_a_bad_answers_file(
    tmp_path: Path, trained: tuple[Path, Path]
) -> None:
    shipped = (REPO / "config" / "gateway.yaml").read_text("utf-8")
    block = (
        "    timezone: UTC\n"
        + answers_block(*trained)
        + "    semantic_cache: { enabled: true, threshold: 0.9 }\n"
    )
    good = tmp_path / "good.yaml"
    good.write_text(shipped.replace("    timezone: UTC\n", block, 1), "utf-8")
    bad_answers, line = broken_file(tmp_path, "duplicate")
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text("utf-8").replace(str(trained[0]), str(bad_answers)), "utf-8")

    ok = check(good)
    refused = check(bad)

    assert ok.returncode == 0, ok.stderr
    assert (
        "  answer layers: default (answers: 6 intents, semantic cache: threshold 0.9)" in ok.stdout
    )
    assert refused.returncode == 1
    assert f"$.tenants.default.answers.file: {bad_answers}:{line}: duplicate intent" in (
        refused.stderr
    )
