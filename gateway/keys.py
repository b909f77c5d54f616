"""API keys: generation, hashing and lookup. Keys are kept only as SHA-256 digests and never logged.

Lookup is by the digest of the presented key, then confirmed with ``hmac.compare_digest``: the
timing of a dict lookup depends on a hash of the key's digest, which tells an attacker nothing
about any stored key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

from gateway.config import GatewayConfig, KeySpec

KEY_PREFIX = "sk-sb-"
GENERATED_KEYS_FILE = "generated-keys.json"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyRing:
    """Digest → tenant name, plus the admin digests."""

    def __init__(self, tenants: Mapping[str, str], admins: frozenset[str]) -> None:
        # Each entry keeps its own digest string so the final check compares against stored data.
        self._tenants = {digest: (digest, tenant) for digest, tenant in tenants.items()}
        self._admins = admins

    @property
    def tenant_names(self) -> frozenset[str]:
        return frozenset(t for _, t in self._tenants.values())

    def tenant_for(self, key: str) -> str | None:
        digest = hash_key(key)
        entry = self._tenants.get(digest)
        if entry is None:
            return None
        stored, tenant = entry
        # Confirm in constant time (see the module docstring for why the lookup itself is safe).
        return tenant if hmac.compare_digest(stored, digest) else None

    def is_admin(self, key: str) -> bool:
        digest = hash_key(key)
        return any(hmac.compare_digest(digest, admin) for admin in self._admins)


def build_keyring(
    config: GatewayConfig,
    *,
    data_dir: Path,
    env: Mapping[str, str],
    announce: Callable[[str], None],
    warn: Callable[[str], None],
) -> KeyRing:
    """Resolve every configured key to a digest.

    A key given by an unset environment variable is disabled with a warning, unless it says
    ``generate_if_unset``: then a key is generated at first start, its digest stored in the data
    directory, and the key itself passed to ``announce`` once (it cannot be shown again).
    """
    tenants: dict[str, str] = {}
    for name, tenant in config.tenants.items():
        for i, spec in enumerate(tenant.keys):
            where = f"$.tenants.{name}.keys[{i}]"
            digest = _resolve(spec, where, name, data_dir, env, announce, warn)
            if digest is None:
                continue
            other = tenants.get(digest)
            if other is not None and other != name:
                raise ValueError(
                    f"{where}: the same key is configured for tenants {other!r} and {name!r}"
                )
            tenants[digest] = name
    admins = set()
    for i, spec in enumerate(config.admin.keys):
        digest = _resolve(spec, f"$.admin.keys[{i}]", "admin", data_dir, env, announce, warn)
        if digest is not None:
            admins.add(digest)
    return KeyRing(tenants=tenants, admins=frozenset(admins))


def _resolve(
    spec: KeySpec,
    where: str,
    owner: str,
    data_dir: Path,
    env: Mapping[str, str],
    announce: Callable[[str], None],
    warn: Callable[[str], None],
) -> str | None:
    if spec.sha256 is not None:
        return spec.sha256
    assert spec.env is not None  # KeySpec guarantees exactly one of the two
    value = env.get(spec.env)
    if value:
        return hash_key(value)
    if not spec.generate_if_unset:
        warn(
            f"{where}: environment variable {spec.env} is unset; that key of {owner!r} is disabled"
        )
        return None
    return _generated_digest(owner, spec.env, data_dir, announce)


def _read_generated(path: Path) -> dict[str, str]:
    """The stored digests; a damaged file is an error naming it, never a silently new key."""
    fix = (
        "restore it from a backup, or delete it to generate new keys "
        "(keys generated before stop working)"
    )
    try:
        stored: object = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); {fix}") from exc
    if not isinstance(stored, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in stored.items()
    ):
        raise ValueError(f"{path}: expected an object of key slot -> SHA-256 digest; {fix}")
    return stored


def _generated_digest(
    owner: str, env_name: str, data_dir: Path, announce: Callable[[str], None]
) -> str:
    path = data_dir / GENERATED_KEYS_FILE
    stored = _read_generated(path) if path.exists() else {}
    slot = f"{owner}:{env_name}"
    if slot in stored:
        return stored[slot]
    key = new_key()
    stored[slot] = hash_key(key)
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stored, indent=2) + "\n", "utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)
    announce(
        f"Generated an API key for tenant {owner!r} "
        f"(shown once; only its hash is stored in {path}):\n"
        f"    {key}\n"
        f"Set {env_name} to use a key of your own instead."
    )
    return stored[slot]
