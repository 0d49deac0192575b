"""The C{jwt} filter: settings, the filter, and JWKS key sets."""
