"""Print, on one line, the SDK versions this interpreter has: what a test run was run against.

    python scripts/sdk_versions.py   # SDKs: anthropic 2.17.0, openai 3.63.0, google-genai 3.6.1, httpx2 …
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

SDKS = ("anthropic", "openai", "google-genai", "httpx2")


def installed(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    print("SDKs: " + ", ".join(f"{name} {installed(name)}" for name in SDKS))
