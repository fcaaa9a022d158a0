"""The Anthropic Messages wire format, read and written without the SDK."""
