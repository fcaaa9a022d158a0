"""Package data: tiktoken BPE ranks for offline token counting (provenance in NOTICE.md)."""
