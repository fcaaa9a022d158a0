"""Provider-specific code: hooking each SDK, reading request blocks, placing markers, reading usage."""
