"""The one place that decides what looks like a secret, for every message budgetclient shows.

Drift excerpts (prompt text shown in a warning or exception) and ledger errors (URLs, driver
messages) are masked here and nowhere else. The ledger never stores prompt text, so this guards
what a person sees, not what is persisted; it errs towards masking too much.

Why our own patterns rather than ``detect-secrets``: its plugins scan source files line by line
and return values, not positions; of the kinds we must catch it misses passwords after ``pwd=``,
e-mail addresses, card numbers, PEM key bodies, the token after ``Authorization: Bearer``,
Hugging Face, Anthropic and current OpenAI keys, and its GitLab plugin reports only the
``glpat`` prefix; it pulls in ``requests`` and ``pyyaml`` and adds ~100 ms of import time. The
patterns below follow each vendor's documented token format; each kind has a test in
``tests/test_redact.py`` (add the kind and its test together).

Three layers, all on bytes so a drift excerpt can be masked by offset:

1. Vendor tokens by their documented prefix and alphabet (Anthropic, OpenAI, AWS, Google,
   GitHub, GitLab, Slack, Stripe, Hugging Face, npm, PyPI, SendGrid, JWTs), and PEM private keys
   (header to footer, or to the end of the base64 run when the footer is cut off).
2. Values after a label: ``password=``, ``pwd:``, ``api_key": "``, ``Authorization: Bearer``,
   ``token=``..., and passwords in URLs (``scheme://user:secret@host``, a raw ``@`` included).
3. Personal data and anonymous keys: e-mail addresses, card numbers (13-19 digits that pass the
   Luhn check), and long mixed-case alphanumeric runs (what a key with an unknown prefix or a
   PEM body line looks like).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["MASK", "mask_secrets", "masked_slice", "masked_window", "secret_spans"]

MASK = "***"

_VENDOR_TOKENS = re.compile(
    rb"sk-ant-[A-Za-z0-9_\-]{6,}"  # Anthropic
    rb"|sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{8,}"  # OpenAI
    rb"|(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}"  # AWS access key ids
    rb"|AIza[0-9A-Za-z_\-]{16,}|ya29\.[0-9A-Za-z_\-.]{8,}|GOCSPX-[0-9A-Za-z_\-]{10,}"  # Google
    rb"|gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{20,}"  # GitHub
    rb"|gl(?:pat|dt|ft|soat|rt|ptt|cbt|imt|oas|agent|wt)-[A-Za-z0-9_\-]{10,}"  # GitLab tokens
    rb"|GR1348941[A-Za-z0-9_\-]{10,}"  # GitLab runner registration
    rb"|xox[abprse]-[A-Za-z0-9\-]{8,}|xapp-[A-Za-z0-9\-]{8,}"  # Slack
    rb"|(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{10,}|whsec_[0-9A-Za-z]{10,}"  # Stripe
    rb"|hf_[A-Za-z0-9]{20,}|api_org_[A-Za-z0-9]{20,}"  # Hugging Face
    rb"|npm_[A-Za-z0-9]{20,}|pypi-[A-Za-z0-9_\-]{20,}|SG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}"
    rb"|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"  # JWT
)
_PEM_PRIVATE_KEY = re.compile(
    rb"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
    rb"(?:.{0,16384}?-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
    rb"|(?:[A-Za-z0-9+/=:,\-\r\n]|\\[nr])*)",  # footer cut off: the rest of the base64 run
    re.DOTALL,
)
_LABEL = (
    rb"(?:api[_\-]?key|access[_\-]?key|secret(?:[_\-]?key)?|client[_\-]?secret|private[_\-]?key"
    rb"|(?:ssl)?pass(?:wd|word|phrase)?|pwd|token|auth(?:orization)?|credentials?|cookie)"
)
_LABELLED = re.compile(
    rb"(?i:" + _LABEL + rb")\\?[\"']?\s*[:=]\s*"
    rb"(?:(?P<quote>\\?[\"'])(?P<quoted>[^\n]{1,512}?)(?P=quote)"  # password='a b', "token": "x y"
    rb"|\\?[\"']?(?i:(?:bearer|basic|token|digest)\s+)?(?P<secret>[^\s\"'\\,;&}<>]{1,512}))"
)
_AUTH_SCHEME = re.compile(rb"(?i:\b(?:bearer|basic))\s+(?P<secret>[A-Za-z0-9._~+/=\-]{8,})")
_URL_PASSWORD = re.compile(
    rb"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^:/?#@\s\"']{0,256}:"  # scheme://user:
    rb"(?P<secret>[^\s\"'<>]{0,256})@(?=[^@\s/?#\"']{0,256}(?:[/?#\s\"']|$))"  # to the host's @
)
_EMAIL = re.compile(
    rb"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]{1,64}"  # the local part, from its start only
    rb"@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63})*\.[A-Za-z]{2,24}"
)
_CARD = re.compile(rb"(?<![0-9])[2-6](?:[ \-]?[0-9]){12,18}(?![0-9])")  # Visa, Mastercard, Amex...
_KEY_LIKE = re.compile(rb"(?<![A-Za-z0-9+/_\-])[A-Za-z0-9+/_\-]{32,}={0,2}")


def _luhn(digits: bytes) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = char - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _key_like(run: bytes) -> bool:
    """A long run with digits, upper and lower case (a key, a base64 line), not a word or a path."""
    return any(
        len(piece) >= 20 and any(48 <= c <= 57 for c in piece) and not piece.islower() and not piece.isupper()
        for piece in run.split(b"/")
    )


def secret_spans(data: bytes) -> list[tuple[int, int]]:
    """Sorted ``(start, end)`` byte ranges of ``data`` that look like credentials or personal data."""
    spans = [m.span() for m in _VENDOR_TOKENS.finditer(data)]
    spans += [m.span() for m in _PEM_PRIVATE_KEY.finditer(data)]
    for m in _LABELLED.finditer(data):
        spans.append(m.span("quoted") if m.group("quoted") is not None else m.span("secret"))
    spans += [m.span("secret") for m in _AUTH_SCHEME.finditer(data)]
    urls = [m.span("secret") for m in _URL_PASSWORD.finditer(data) if m.end("secret") > m.start("secret")]
    spans += urls
    for m in _EMAIL.finditer(data):  # not the ``user:password@host`` or ``user@host`` of a URL
        start = m.start()
        if data[max(start - 3, 0) : start] != b"://" and not any(lo <= start < hi for lo, hi in urls):
            spans.append(m.span())
    for m in _CARD.finditer(data):
        digits = bytes(c for c in m.group() if 48 <= c <= 57)
        if 13 <= len(digits) <= 19 and _luhn(digits):
            spans.append(m.span())
    spans += [m.span() for m in _KEY_LIKE.finditer(data) if _key_like(m.group())]
    return sorted(spans)


def masked_slice(data: bytes, lo: int, hi: int, spans: Sequence[tuple[int, int]]) -> str:
    """``data[lo:hi]`` as text with every byte inside ``spans`` replaced, one `MASK` per span."""
    out: list[bytes] = []
    at = lo
    for start, end in spans:
        if end <= at or start >= hi:
            continue
        if start > at:
            out.append(data[at:start])
        out.append(MASK.encode())
        at = max(at, end)
    if at < hi:
        out.append(data[at:hi])
    return b"".join(out).decode("utf-8", errors="replace")


_NEAR = 1024
"""Bytes either side of a window searched for secrets: more than any pattern but a PEM key spans."""
_PEM_NEAR = 16384
"""How far back a PEM header (and forward its footer) is looked for: a 4096-bit key is ~3.3 kB."""


def masked_window(data: bytes, lo: int, hi: int) -> str:
    """``data[lo:hi]`` masked as if all of ``data`` had been searched, without searching it all.

    A secret that starts before ``lo`` (a key cut by an excerpt's edge, the body of a PEM key
    whose header is kilobytes earlier) is still masked inside the window.
    """
    start, end = max(lo - _NEAR, 0), min(hi + _NEAR, len(data))
    header = data.rfind(b"-----BEGIN", max(lo - _PEM_NEAR, 0), start + 16)
    if header >= 0:
        start, end = header, min(max(end, hi + _PEM_NEAR), len(data))
    spans = [(s + start, e + start) for s, e in secret_spans(data[start:end])]
    return masked_slice(data, lo, hi, spans)


def mask_secrets(text: str) -> str:
    """``text`` with anything that looks like a credential or personal data replaced by ``***``."""
    data = text.encode("utf-8", errors="surrogatepass")
    spans = secret_spans(data)
    if not spans:
        return text
    return masked_slice(data, 0, len(data), spans)
