"""The one secret masker (`budgetclient._redact.mask_secrets`): each kind masked, ordinary text kept.

Every kind the masker knows has a case here; the ones issue 17 found missing come first.
"""

from __future__ import annotations

import pytest

from budgetclient import drift
from budgetclient._redact import MASK, mask_secrets, secret_spans
from budgetclient.drift import excerpt
from budgetclient.ledger import base

PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAx7Q2lz9Kf3pZ8sQWERTYuiopASDFghjklZXCVbnm1234567890\n"
    "qwertyUIOPasdfGHJKlzxcVBNM0987654321poiuYTREWQlkjhGFDSAmnbvcxz5678\n"
    "-----END RSA PRIVATE KEY-----"
)

# (text, the secret inside it that must disappear)
CASES: dict[str, tuple[str, str]] = {
    "pwd=": ("connect with pwd=Hunter2Horse! now", "Hunter2Horse!"),
    "password: quoted with spaces": ('{"password": "correct horse battery"}', "correct horse battery"),
    "libpq password='...'": ("host=h password='a b c' dbname=x", "a b c"),
    "sslpassword=": ("host=h sslpassword=Kl1entKey dbname=x", "Kl1entKey"),
    "e-mail": ("mail jane.doe+bills@example.co.uk today", "jane.doe+bills@example.co.uk"),
    "card, spaced": ("card 4111 1111 1111 1111 exp", "4111 1111 1111 1111"),
    "card, dashed": ("card 5555-5555-5555-4444 exp", "5555-5555-5555-4444"),
    "card, plain": ("amex 378282246310005 ok", "378282246310005"),
    "PEM private key body": (PEM, "qwertyUIOPasdfGHJKlzxcVBNM0987654321"),
    "PEM in JSON, footer cut": (
        '{"text":"-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQ',
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    ),
    "Authorization: Bearer": ("Authorization: Bearer abcDEF123ghiJKL456mno", "abcDEF123ghiJKL456mno"),
    "Authorization: Basic": ("authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
    "URL password": ("postgres://admin:S3cr3tPassw0rd@db.internal/app", "S3cr3tPassw0rd"),
    "URL password with a raw @": ("postgresql://u:p@ss@w0rd@db.example.com:5432/x", "p@ss@w0rd"),
    "Stripe secret key": ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    "Stripe restricted key": ("rk_test_51Hxyz0123456789abcdEFGH", "rk_test_51Hxyz0123456789abcdEFGH"),
    "GitLab personal token": ("GITLAB_TOKEN glpat-xYz12AbC34dEf56GhI78", "glpat-xYz12AbC34dEf56GhI78"),
    "GitLab deploy token": ("use gldt-abcDEF0123456789xyz", "gldt-abcDEF0123456789xyz"),
    "Hugging Face token": ("hf_abcdefghijklmnopqrstuvwxyzABCDEFGH", "hf_abcdefghijklmnopqrstuvwxyzABCDEFGH"),
    "AWS access key id": ("aws AKIAIOSFODNN7EXAMPLE key", "AKIAIOSFODNN7EXAMPLE"),
    "AWS secret access key": (
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    "Anthropic key": ("sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1HgFeDcBa0", "Zx9Yw8Vu7Ts6Rq5Po4Nm3"),
    "OpenAI project key": ("sk-proj-Qw3Er4Ty5Ui6Op7As8Df9Gh0JkLzXcVbNm", "Qw3Er4Ty5Ui6Op7As8Df9"),
    "OpenAI legacy key": ("OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwxyz012345", "abcdefghijklmnop"),
    "Google API key": ("key AIzaSyA-1234567890abcdefghijklmnopqr", "AIzaSyA-1234567890abcdefghij"),
    "GitHub token": ("ghp_ABCDEFGHIJKLMNOPQRSTUVWX0123456789", "ghp_ABCDEFGHIJKLMNOPQRSTUVWX"),
    "Slack token": ("xoxb-123456789012-abcdefghijkl", "xoxb-123456789012-abcdefghijkl"),
    "JWT": (
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "eyJzdWIiOiIxMjM0NTY3ODkwIn0",
    ),
    "api_key in JSON": ('{"api_key": "abc123secret"}', "abc123secret"),
    "escaped JSON in a prompt": ('say \\"token\\": \\"t0k3n value\\"', "t0k3n value"),
    "unknown key, long mixed run": ("key Zq8Xw7Vc6Bn5Mm4Ll3Kk2Jj1Hh0GgFfDdSs", "Zq8Xw7Vc6Bn5Mm4Ll3Kk2Jj1"),
}


@pytest.mark.parametrize("kind", CASES)
def test_each_kind_is_masked(kind: str) -> None:
    text, secret = CASES[kind]
    masked = mask_secrets(text)
    assert secret not in masked, masked
    assert MASK in masked


@pytest.mark.parametrize(
    "text",
    [
        "Today is 2026-12-07T10:05:00Z, 1733558400123 ms since the epoch.",
        "request 123e4567-e89b-12d3-a456-426614174000 and digest 9f86d081884c7d659a2feaa0c55ad015",
        "see /home/user/projects/budgetclient/tests/Test1/module_x.py line 12",
        "max_tokens=100, tokens_at_risk=5, passes: 3, author: Jane",
        "postgresql://u@h/db and sqlite:////tmp/ledger.db",
        "order 1234 5678 shipped; phone +1 415 555 0100",
        "You are a helpful assistant. Answer in French.",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert mask_secrets(text) == text


def test_ledger_urls_keep_everything_but_the_password() -> None:
    assert base.mask_url("postgresql://u:secret@h:5432/db?sslmode=require") == (
        "postgresql://u:***@h:5432/db?sslmode=require"
    )
    assert base.mask_url("postgresql://u:p@ss@db.example.com/x") == "postgresql://u:***@db.example.com/x"
    assert base.mask_url("postgresql://h/db?user=u&password=secret&sslpassword=k3y") == (
        "postgresql://h/db?user=u&password=***&sslpassword=***"
    )


def test_there_is_one_masker() -> None:
    assert drift.mask_secrets is base.mask_secrets is mask_secrets


def test_excerpt_masks_a_secret_that_starts_outside_it() -> None:
    data = (b"x" * 300) + PEM.encode() + b" tail"
    offset = data.index(b"qwerty") + 10  # a drift inside the key body, far from its header
    shown = excerpt(data, offset)
    assert "qwerty" not in shown and "UIOP" not in shown and MASK in shown
    key = b"sk-ant-api03-" + b"Q" * 40
    data = b"y" * 100 + key + b" after"
    shown = excerpt(data, 100 + len(key) - 5)  # starts inside the key
    assert "QQQQ" not in shown and "after" in shown


def test_spans_are_byte_offsets_of_utf8() -> None:
    data = "é pwd=Hunter2".encode()
    ((start, end),) = secret_spans(data)
    assert data[start:end] == b"Hunter2"


def test_lone_surrogates_do_not_raise() -> None:
    assert mask_secrets("pwd=abc\udcff def").startswith("pwd=***")


@pytest.mark.parametrize(
    "text",
    [
        "a" * 120_000 + "@",
        "a" * 120_000 + "://",
        "://a:" * 24_000,
        ";a://b:" * 20_000,
        "4" * 120_000,
        "a@" + "a." * 60_000,
    ],
    ids=["email", "url scheme", "url user", "url password", "card", "email domain"],
)
def test_no_quadratic_backtracking(text: str) -> None:
    """Error messages and excerpts are masked on the call path: a hostile input stays linear
    (each of these took seconds, growing with the square of the length, before the bounds)."""
    import time

    started = time.perf_counter()
    mask_secrets(text)
    assert time.perf_counter() - started < 5.0
