"""The fakes of the tests and benchmarks: stand-ins for an LLM that answer promptclf's own prompts.

* :mod:`.answers` reads a batch prompt back (its labels and numbered items) and answers it
  deterministically, or like a teacher of a given accuracy.
* :mod:`.fake_provider` is an in-process chat provider with injectable faults (missing,
  shuffled, duplicated and off-list items, empty and truncated JSON, 429/5xx, timeouts, a bad
  key): the engine's unit tests run through it in milliseconds, with the same typed errors a
  hosted provider raises, so both retry layers run for real.

Nothing in the product imports this package; it sits beside the CLI in the layer order.
"""
