"""Token encodings: the tiktoken ranks shipped with the package, loaded once, per model.

Counting uses tiktoken with the ``o200k_base`` / ``cl100k_base`` ranks shipped in
``budgetclient/data`` (tiktoken cannot download them here). They are loaded and hash-checked by
this module and turned into a private ``tiktoken.Encoding``: no ``TIKTOKEN_CACHE_DIR``, no
``tiktoken_ext`` plugin, no write to tiktoken's disk cache, so other tiktoken users are unaffected.
``tiktoken.load.load_tiktoken_bpe`` is deliberately not used: even for a local path it copies the
file into ``$TIKTOKEN_CACHE_DIR`` (or ``$TMPDIR/data-gym-cache``) and fails when that is unwritable.

Claude and Gemini tokenizers are not public, so their text is counted with ``o200k_base`` and the
per-model ratio learnt by ``calibrate`` from the provider's reported input tokens closes the gap.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import tiktoken

from .._fork_locks import renew_after_fork
from ..errors import ConfigurationError

__all__ = [
    "SHORT_TEXT_CHARS",
    "ApproximatedEncoding",
    "encoding_for",
    "load_encoding_file",
    "model_family",
    "short_text_chars",
]

_HELLO_WORLD = "hello world"
_ENDOFTEXT = "<|endoftext|>"
_ENDOFPROMPT = "<|endofprompt|>"


@dataclass(frozen=True, slots=True)
class _EncodingSpec:
    name: str
    sha256: str
    pat_str: str
    special_tokens: Mapping[str, int]


# Copied from tiktoken_ext/openai_public.py (tiktoken 0.14); tests check they still match.
_SPECS = {
    "o200k_base": _EncodingSpec(
        name="o200k_base",
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str="|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        special_tokens={_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
    ),
    "cl100k_base": _EncodingSpec(
        name="cl100k_base",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str=(
            r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+"""
            r"""| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
        ),
        special_tokens={
            _ENDOFTEXT: 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            _ENDOFPROMPT: 100276,
        },
    ),
}

_encodings: dict[str, tiktoken.Encoding] = {}
_encodings_lock = threading.Lock()
renew_after_fork(globals(), "_encodings_lock")


def load_encoding_file(path: str | Path, expected_hash: str) -> dict[bytes, int]:
    """Read a ``.tiktoken`` ranks file, refusing it unless its SHA-256 is ``expected_hash``."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read tiktoken encoding file {str(path)!r}: {exc}; "
            "reinstall budgetclient (pip install --force-reinstall budgetclient)"
        ) from exc
    return _parse_ranks(data, str(path), expected_hash)


def _parse_ranks(data: bytes, source: str, expected_hash: str) -> dict[bytes, int]:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_hash:
        raise ConfigurationError(
            f"tiktoken encoding file {source!r} is corrupted: its sha256 is {actual}, expected "
            f"{expected_hash}; reinstall budgetclient (pip install --force-reinstall budgetclient)"
        )
    # Each line is "<base64 token> <rank>"; the hash already vouched for the layout.
    fields_ = data.split()
    return dict(zip(map(binascii.a2b_base64, fields_[0::2]), map(int, fields_[1::2]), strict=True))


def _load_encoding(name: str) -> tiktoken.Encoding:
    spec = _SPECS[name]
    resource = files("budgetclient.data").joinpath(f"{name}.tiktoken")
    try:
        data = resource.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"budgetclient's packaged encoding {name}.tiktoken is missing ({exc}); "
            "reinstall budgetclient (pip install --force-reinstall budgetclient)"
        ) from exc
    ranks = _parse_ranks(data, str(resource), spec.sha256)
    return tiktoken.Encoding(
        spec.name, pat_str=spec.pat_str, mergeable_ranks=ranks, special_tokens=dict(spec.special_tokens)
    )


def _encoding(name: str) -> tiktoken.Encoding:
    if name == _APPROXIMATED:
        enc = _encodings.get(name)
        if enc is None:
            enc = ApproximatedEncoding.of(_encoding("o200k_base"))
            with _encodings_lock:
                enc = _encodings.setdefault(name, enc)
        return enc
    enc = _encodings.get(name)
    if enc is None:
        with _encodings_lock:  # loaded once even when many threads ask at first use
            enc = _encodings.get(name)
            if enc is None:
                enc = _encodings[name] = _load_encoding(name)
    return enc


_DATED_SUFFIX = re.compile(r"(-\d{8}|-\d{4}-\d{2}-\d{2}|-\d{4}|@[\w.-]+|-v\d+(:\d+)?|-latest)$")
_BEDROCK_PREFIX = re.compile(r"^(?:[a-z]{2,6}\.)?anthropic\.")


@functools.lru_cache(maxsize=1024)
def model_family(model: str) -> str:
    """The model name without provider path, dated snapshot or version suffix.

    ``claude-sonnet-4-5-20250929``, ``us.anthropic.claude-sonnet-4-5-20250929-v1:0`` and
    ``claude-sonnet-4-5@20250929`` share one tokenizer, so they share one calibration.
    """
    family = model.strip().lower()
    if family.startswith("ft:"):
        family = family[3:].split(":", 1)[0]
    family = _BEDROCK_PREFIX.sub("", family.rsplit("/", 1)[-1])
    while (stripped := _DATED_SUFFIX.sub("", family)) != family and stripped:
        family = stripped
    return family


_CL100K_PREFIXES = (
    "gpt-4-",
    "gpt-3.5",
    "gpt-35",
    "text-embedding-ada",
    "text-embedding-3",
    "davinci-002",
    "babbage-002",
)


SHORT_TEXT_CHARS = 1024
"""Claude's and Gemini's texts shorter than this are counted by a rule of their length
(`ApproximatedEncoding`)."""


class ApproximatedEncoding(tiktoken.Encoding):
    """``o200k_base`` standing in for Claude's or Gemini's tokenizer, which are not public.

    Its texts shorter than `SHORT_TEXT_CHARS` are counted by `approximate_count` instead of
    tiktoken (`tokens.counting` asks for this type): a stand-in's exact count of a short turn is
    no closer to what the provider reports than a rule of its length (calibration corrects the scale of
    both), and tiktoken is the dearest step of an agent's pre-call path (it releases the GIL, so
    any background thread waiting for it runs inside the caller's call). Longer texts (documents,
    tool results) keep o200k's count, which follows their content (code, JSON, scripts). It shares
    the loaded encoding's tables; ``name`` stays ``o200k_base``.
    """

    @classmethod
    def of(cls, encoding: tiktoken.Encoding) -> ApproximatedEncoding:
        approximated = cls.__new__(cls)
        approximated.__dict__.update(vars(encoding))  # the same ranks and core: nothing reloaded
        return approximated


def encoding_for(model: str) -> tiktoken.Encoding:
    """``cl100k_base`` for gpt-4 / gpt-3.5 / embeddings, ``o200k_base`` for everything else.

    o200k_base is exact for gpt-4o, gpt-4.1, gpt-5 and the o-series, and the approximation used for
    claude-* and gemini-* (their tokenizers are not public; calibration corrects the scale). For
    those it is an `ApproximatedEncoding`: short texts are counted by a rule of their length.
    """
    name = _encoding_name(model)
    loaded = _encodings.get(name)  # every estimate with new text asks: no second call once loaded
    return loaded if loaded is not None else _encoding(name)


_APPROXIMATED = "o200k_base~approximated"
"""The key of o200k_base as `ApproximatedEncoding` (claude-*, gemini-*) among the loaded encodings."""


def short_text_chars(model: str) -> int:
    """Below this length ``model``'s texts are counted by `counting.approximate_count` (0: none
    are), told without loading the encoding: `encoding_for` is an `ApproximatedEncoding`."""
    return SHORT_TEXT_CHARS if _encoding_name(model) == _APPROXIMATED else 0


@functools.lru_cache(maxsize=1024)
def _encoding_name(model: str) -> str:
    family = model_family(model)
    if family == "gpt-4" or family.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    if family.startswith(("claude", "gemini")):
        return _APPROXIMATED
    return "o200k_base"
