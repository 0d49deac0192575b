"""
The built-in circuit_breaker filter, registered the way a third-party filter is.

The implementation is twistgate/filters/circuit_breaker.py; this module only holds the factory.
"""

from __future__ import annotations

from twistgate.filters.circuit_breaker import CircuitBreakerFactory

circuit_breaker = CircuitBreakerFactory()
