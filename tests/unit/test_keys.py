from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from gateway.config import GatewayConfig, parse_config
from gateway.keys import (
    GENERATED_KEYS_FILE,
    KEY_PREFIX,
    KeyRing,
    build_keyring,
    hash_key,
    new_key,
)

ACME_DIGEST = hash_key("sk-acme-from-hash")

CONFIG = f"""
upstreams:
  local: {{ base_url: "http://127.0.0.1:11434/v1", local: true }}
tiers:
  small: {{ upstream: local, model: tiny }}
  large: {{ upstream: local, model: big }}
router:
  default: small
tenants:
  acme:
    keys:
      - sha256: {ACME_DIGEST}
      - env: ACME_KEY
  globex:
    keys:
      - env: GLOBEX_KEY
admin:
  keys:
    - env: ADMIN_KEY
"""

GENERATING = """
upstreams:
  local: { base_url: "http://127.0.0.1:11434/v1", local: true }
tiers:
  small: { upstream: local, model: tiny }
  large: { upstream: local, model: big }
router:
  default: small
tenants:
  default:
    keys:
      - env: SWITCHBOARD_API_KEY
        generate_if_unset: true
"""


def config_of(text: str) -> GatewayConfig:
    return parse_config(text, source="keys.yaml", env={}).config


class Recorder:
    """Collects what build_keyring announces and warns about."""

    def __init__(self) -> None:
        self.announced: list[str] = []
        self.warnings: list[str] = []

    def build(self, text: str, data_dir: Path, **env: str) -> KeyRing:
        return build_keyring(
            config_of(text),
            data_dir=data_dir,
            env=env,
            announce=self.announced.append,
            warn=self.warnings.append,
        )


def announced_key(message: str) -> str:
    found = re.findall(r"sk-sb-[A-Za-z0-9_-]+", message)
    assert len(found) == 1, message
    return str(found[0])


def test_new_key_has_the_prefix_and_43_random_url_safe_characters() -> None:
    key = new_key()
    assert key.startswith(KEY_PREFIX)
    assert KEY_PREFIX == "sk-sb-"
    assert re.fullmatch(r"sk-sb-[A-Za-z0-9_-]{43}", key)


def test_new_keys_differ() -> None:
    assert len({new_key() for _ in range(50)}) == 50


def test_hash_key_is_the_sha256_hex_digest_of_the_utf8_key() -> None:
    assert hash_key("sk-sb-abc") == hashlib.sha256(b"sk-sb-abc").hexdigest()
    assert hash_key("密钥") == hashlib.sha256("密钥".encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", hash_key(new_key()))


def test_keyring_maps_keys_to_tenants_and_unknown_keys_to_none() -> None:
    ring = KeyRing(
        tenants={hash_key("k-acme"): "acme", hash_key("k-globex"): "globex"},
        admins=frozenset(),
    )
    assert ring.tenant_for("k-acme") == "acme"
    assert ring.tenant_for("k-globex") == "globex"
    assert ring.tenant_for("k-other") is None
    assert ring.tenant_for("") is None
    assert ring.tenant_names == frozenset({"acme", "globex"})


def test_keyring_does_not_accept_the_digest_in_place_of_the_key() -> None:
    digest = hash_key("k-acme")
    ring = KeyRing(tenants={digest: "acme"}, admins=frozenset({digest}))
    assert ring.tenant_for(digest) is None
    assert not ring.is_admin(digest)


def test_keyring_admin_check_accepts_only_admin_keys() -> None:
    ring = KeyRing(tenants={hash_key("k-acme"): "acme"}, admins=frozenset({hash_key("k-admin")}))
    assert ring.is_admin("k-admin")
    assert not ring.is_admin("k-acme")
    assert not ring.is_admin("k-nope")
    # An admin key is not a tenant key.
    assert ring.tenant_for("k-admin") is None


def test_build_keyring_resolves_sha256_and_env_keys(tmp_path: Path) -> None:
    rec = Recorder()
    ring = rec.build(
        CONFIG, tmp_path, ACME_KEY="sk-acme-env", GLOBEX_KEY="sk-globex", ADMIN_KEY="sk-admin"
    )
    assert ring.tenant_for("sk-acme-from-hash") == "acme"
    assert ring.tenant_for("sk-acme-env") == "acme"
    assert ring.tenant_for("sk-globex") == "globex"
    assert ring.tenant_for("sk-admin") is None
    assert ring.is_admin("sk-admin")
    assert not ring.is_admin("sk-globex")
    assert rec.warnings == []
    assert rec.announced == []
    assert not (tmp_path / GENERATED_KEYS_FILE).exists()


def test_an_unset_env_key_is_disabled_with_a_warning_naming_it(tmp_path: Path) -> None:
    rec = Recorder()
    ring = rec.build(CONFIG, tmp_path, ACME_KEY="sk-acme-env")
    assert ring.tenant_for("sk-acme-env") == "acme"
    assert ring.tenant_for("sk-acme-from-hash") == "acme"
    assert ring.tenant_names == frozenset({"acme"})
    assert not ring.is_admin("")
    assert len(rec.warnings) == 2
    globex, admin = rec.warnings
    assert "$.tenants.globex.keys[0]" in globex
    assert "GLOBEX_KEY is unset" in globex
    assert "'globex'" in globex
    assert "$.admin.keys[0]" in admin
    assert "ADMIN_KEY is unset" in admin
    assert rec.announced == []


def test_an_empty_env_key_is_disabled_rather_than_matching_the_empty_key(tmp_path: Path) -> None:
    rec = Recorder()
    ring = rec.build(CONFIG, tmp_path, ACME_KEY="", GLOBEX_KEY="sk-globex")
    assert ring.tenant_for("") is None
    assert any("ACME_KEY is unset" in w for w in rec.warnings)


def test_generate_if_unset_stores_only_the_hash_and_announces_the_key_once(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"  # does not exist yet: the first start creates it
    rec = Recorder()
    ring = rec.build(GENERATING, data_dir)

    assert len(rec.announced) == 1
    key = announced_key(rec.announced[0])
    assert key.startswith("sk-sb-")
    assert "SWITCHBOARD_API_KEY" in rec.announced[0]
    assert ring.tenant_for(key) == "default"

    stored_file = data_dir / GENERATED_KEYS_FILE
    text = stored_file.read_text("utf-8")
    assert key not in text
    assert json.loads(text) == {"default:SWITCHBOARD_API_KEY": hash_key(key)}
    assert stored_file.stat().st_mode & 0o777 == 0o600
    assert rec.warnings == []


def test_a_second_start_with_the_same_data_dir_announces_nothing_and_keeps_the_key(
    tmp_path: Path,
) -> None:
    first = Recorder()
    first.build(GENERATING, tmp_path)
    key = announced_key(first.announced[0])

    second = Recorder()
    ring = second.build(GENERATING, tmp_path)
    assert second.announced == []
    assert second.warnings == []
    assert ring.tenant_for(key) == "default"
    assert ring.tenant_for(new_key()) is None


def test_a_set_variable_wins_over_generation(tmp_path: Path) -> None:
    rec = Recorder()
    ring = rec.build(GENERATING, tmp_path, SWITCHBOARD_API_KEY="sk-mine")
    assert ring.tenant_for("sk-mine") == "default"
    assert rec.announced == []
    assert not (tmp_path / GENERATED_KEYS_FILE).exists()


def test_the_same_key_for_two_tenants_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        Recorder().build(CONFIG, tmp_path, ACME_KEY="sk-shared", GLOBEX_KEY="sk-shared")
    message = str(info.value)
    assert message.startswith("$.tenants.globex.keys[0]: ")
    assert "'acme' and 'globex'" in message


def test_the_same_key_twice_for_one_tenant_is_allowed(tmp_path: Path) -> None:
    ring = Recorder().build(CONFIG, tmp_path, ACME_KEY="sk-acme-from-hash")
    assert ring.tenant_for("sk-acme-from-hash") == "acme"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{", "not valid JSON"),
        ('["sk-sb-x"]', "expected an object"),
        ('{"default:SWITCHBOARD_API_KEY": 5}', "expected an object"),
    ],
)
def test_a_damaged_generated_keys_file_is_an_error_naming_it(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / GENERATED_KEYS_FILE
    path.write_text(content, "utf-8")
    rec = Recorder()
    with pytest.raises(ValueError) as info:
        rec.build(GENERATING, tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}: {problem}")
    assert "delete it" in message
    # Nothing was generated over the damaged file.
    assert rec.announced == []
    assert path.read_text("utf-8") == content
