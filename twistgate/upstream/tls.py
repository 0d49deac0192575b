"""
TLS towards ``https://`` targets.

By default a target's certificate must chain to the system's CAs (or the upstream's ``ca_file``)
and name the target's host, checked with service-identity through Twisted's
L{optionsForClientTLS}. ``tls_verify = no`` turns both checks off (and start-up logs a warning).
``client_cert`` / ``client_key`` present a client certificate for mutual TLS.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@implementer(IPolicyForHTTPS)
class UpstreamTLSPolicy:
    """The TLS settings of one upstream, as twisted.web's Agent asks for them."""

    def __init__(
        self,
        verify: bool = True,
        ca_file: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
    ):
        self._verify = verify
        self._trust_root = (
            ssl.trustRootFromCertificates(
                [ssl.Certificate.loadPEM(pem) for pem in _split_pem(_read(ca_file))]
            )
            if ca_file
            else ssl.platformTrust()
        )
        self._client_certificate = None
        if client_cert:
            key = _read(client_key) if client_key else b""
            self._client_certificate = ssl.PrivateCertificate.loadPEM(_read(client_cert) + key)
        self._unverified_context = None
        if not verify:
            options = (
                ssl.CertificateOptions(
                    privateKey=self._client_certificate.privateKey.original,
                    certificate=self._client_certificate.original,
                    verify=False,
                )
                if self._client_certificate
                else ssl.CertificateOptions(verify=False)
            )
            self._unverified_context = options.getContext()

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        host = hostname.decode("ascii")
        if self._verify:
            return ssl.optionsForClientTLS(
                host, trustRoot=self._trust_root, clientCertificate=self._client_certificate
            )
        return _Unverified(host, self._unverified_context)


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """TLS with server name indication but no certificate checks (``tls_verify = no``)."""

    def __init__(self, host: str, context: SSL.Context):
        self._host = host.encode("idna")
        self._context = context

    def clientConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        connection.set_tlsext_host_name(self._host)
        return connection


def _split_pem(data: bytes) -> list[bytes]:
    """The certificates of a PEM bundle, each as its own PEM block."""
    marker = b"-----END CERTIFICATE-----"
    return [block + marker for block in data.split(marker) if b"-----BEGIN" in block]
