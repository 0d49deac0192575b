"""The C{cache} filter: an RFC 9111 shared cache, one module per part of the RFC."""
