"""Anthropic credential profiles on disk, written as the installed SDK's credential chain reads them."""

from __future__ import annotations

import json
import time
from pathlib import Path


def write_profile(config_dir: Path, name: str, token: str, workspace: str) -> None:
    """A ``user_oauth`` profile without ``client_id`` (an externally rotated token), laid out as
    ``anthropic.lib.credentials.CredentialsFile`` reads it: config 0644, credentials 0600."""
    (config_dir / "configs").mkdir(parents=True, exist_ok=True)
    (config_dir / "credentials").mkdir(parents=True, exist_ok=True)
    config = config_dir / "configs" / f"{name}.json"
    config.write_text(json.dumps({"authentication": {"type": "user_oauth"}, "workspace_id": workspace}))
    config.chmod(0o644)
    secret = config_dir / "credentials" / f"{name}.json"
    secret.write_text(json.dumps({"access_token": token, "expires_at": int(time.time()) + 3600}))
    secret.chmod(0o600)
