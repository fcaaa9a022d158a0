"""The Gemini generateContent wire format, read and written without the SDK."""
