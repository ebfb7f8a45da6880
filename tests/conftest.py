"""Settings for the whole suite.

Hypothesis: no per-example deadline and no "too slow" health check. Both are
wall-clock judgements, and this suite runs on a 2-core machine next to other
work (CI, the mock, Open WebUI); speed is the bench's business, never a
test's. The number of examples stays Hypothesis's default.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("orpipe", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("orpipe")
