"""What the upstream tests share: a certificate for a local HTTPS server."""

import shutil
import subprocess

import pytest


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """(cert.pem, key.pem) of a self-signed certificate for localhost."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command makes this test's certificate; it is not installed")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", folder / "key.pem",
                    "-out", folder / "cert.pem"],
                   check=True, capture_output=True)
    return folder / "cert.pem", folder / "key.pem"
