"""The providers' documented prompt-cache rules as plain code, and trace replay on them.

Used by the planner (`plan.plan_trace`: what placement saves on a plan's session), the cache
benchmark and the fake backends in ``budgetclient.testing``, so all three bill caching the same
way. Core code: no SDK, no HTTP.

- `anthropic`: blocks in cache order, breakpoints, the 20-block lookback, TTLs, writes and reads;
- `tokenizer`: the simulation's tokenizer (one word, one token), easy to compute by hand;
- `traces`: the reference conversations;
- `replay`: caching strategies and `run_trace` on `replay.SimulatedAnthropic`.
"""
