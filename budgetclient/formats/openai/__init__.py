"""The OpenAI chat.completions and responses wire format, read and written without the SDK."""
