"""Config texts shared by the routing tests (no network: the upstream URL is never called)."""

from __future__ import annotations

# Two priced tiers (small: $1/$2, large: $10/$20 per million tokens) and the classifier on;
# THRESHOLD and TENANT_OPTIONS are replaced by each test.
PRICED_CLASSIFIER_CONFIG = """
upstreams:
  mock: { base_url: "http://127.0.0.1:9/v1" }
tiers:
  small:
    upstream: mock
    model: small-model
    price: { input_usd_per_mtok: 1, output_usd_per_mtok: 2 }
  large:
    upstream: mock
    model: large-model
    price: { input_usd_per_mtok: 10, output_usd_per_mtok: 20 }
router:
  default: small
  classifier: { threshold: THRESHOLD }
tenants:
  acme: { keys: [{ env: K }]TENANT_OPTIONS }
"""


def priced_classifier_config(threshold: float, *, store_request_text: bool = False) -> str:
    options = ", store_request_text: true" if store_request_text else ""
    return PRICED_CLASSIFIER_CONFIG.replace("THRESHOLD", str(threshold)).replace(
        "TENANT_OPTIONS", options
    )
