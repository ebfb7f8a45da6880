"""A fuzz harness that plays hostile upstream streams against a real engine over loopback.

Not the bench's mock (``bench.mock_openrouter``): that one speaks well-formed
HTTP through hypercorn. This package writes the bytes itself, so a stream
can be split anywhere (down to one byte, inside a chunk header), use any
line end, stall, be cut, or leave the connection open after its last event.

* ``tests.fuzz.script``: what a generated stream is (a ``Case``: the wire
  bytes of each attempt with the pauses between them, and what the engine
  must make of it, an ``Expect``).
* ``tests.fuzz.sse`` and ``tests.fuzz.streams``: the Responses event stream
  (the logical events and the text they carry) and its SSE encodings; a
  reference decoder checks the generator itself.
* ``tests.fuzz.generator``: one generator per class of stream, from a seed.
* ``tests.fuzz.server``: the byte-level HTTP server on 127.0.0.1:0 and the
  per-request record of what it did when (the basis of the time bounds).
* ``tests.fuzz.properties``: what a consumer saw, and the properties it must
  satisfy.
* ``tests.fuzz.runner``: engines, batches of concurrent streams, canaries,
  crash isolation, and the summary.

``tests/fuzz/test_fuzz.py`` runs a short fixed-seed version in CI;
``python -m bench fuzz --seconds N`` runs the long one (``bench.fuzz``).
"""
