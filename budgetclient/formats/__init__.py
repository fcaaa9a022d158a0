"""Provider wire formats without the SDKs: how each provider's request body is read and written.

``formats/<provider>/`` knows a provider's JSON (blocks, cache markers, what counts as input
text) and imports no SDK and no ``httpx2``, so the core, the cache simulator and the planner can
use it; ``providers/<provider>`` adds only what must touch SDK objects.
"""
