"""A gateway whose tenants use neither approved answers nor the semantic cache never imports numpy.

numpy (and what imports it: the answers matcher and model, the embedders, the semantic cache)
costs ~15 MiB of resident memory per process; the default configs need none of it. A fresh
interpreter is the only place to check this: the test process has imported everything already.

A config WITH approved answers is not checked here: it needs a model trained with scikit-learn
(``gateway answers train``); tests/api/test_answer_layers.py covers that path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Modelled on config/examples/openai-compatible.yaml: the classifier on, no `answers:` and no
# tenant with `semantic_cache:` (the top-level section is on by default: tenants opt in).
CONFIG = """\
state: embedded
upstreams:
  upstream:
    base_url: ${UPSTREAM_BASE_URL}
    connect_timeout_s: 5
    read_timeout_s: 60
tiers:
  small:
    upstream: upstream
    model: ${SMALL_MODEL}
    price: { input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6 }
  large:
    upstream: upstream
    model: ${LARGE_MODEL}
    price: { input_usd_per_mtok: 2.5, output_usd_per_mtok: 10 }
models:
  auto: { route: auto }
  gpt-4o: { route: large }
router:
  default: small
  order: [rules, classifier]
  classifier: { threshold: 0.25 }
  rules:
    - name: long-prompt
      when: { prompt_tokens_over: 1500 }
      route: large
cache:
  enabled: true
tenants:
  demo:
    keys:
      - env: DEMO_API_KEY
"""

HEAVY = ("numpy", "sklearn", "scipy", "wordllama")
FEATURE_MODULES = (
    "gateway.answers.matcher",
    "gateway.answers.model",
    "gateway.answers.loading",
    "gateway.embedder",
    "gateway.remote_embedder",
    "gateway.cache.semantic",
)


def test_app_without_answer_layers_imports_no_numpy(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG)
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path

        from gateway.app import create_app
        from gateway.settings import Settings

        settings = Settings.from_env(
            config_path=Path({str(config)!r}), data_dir=Path({str(tmp_path / "data")!r})
        )
        app = create_app(settings)
        runtime = app.state.switchboard.runtime
        assert runtime.answers is None, runtime.answers
        # the difficulty classifier is on in this config: scoring needs no numpy either
        classifier = runtime.routing_state.classifier
        assert classifier is not None
        classifier.score([{{"role": "user", "content": "Prove that sqrt(2) is irrational."}}])
        heavy = [m for m in sys.modules if m.split(".")[0] in {HEAVY!r}]
        assert not heavy, heavy[:10]
        features = [m for m in sys.modules if m.startswith({FEATURE_MODULES!r})]
        assert not features, features
        """
    )
    env = {
        **os.environ,
        "UPSTREAM_BASE_URL": "http://127.0.0.1:9/v1",
        "SMALL_MODEL": "small-model",
        "LARGE_MODEL": "large-model",
        "DEMO_API_KEY": "sk-lazy-imports-test",
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
