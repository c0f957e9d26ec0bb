"""TLS: `serve --ssl-certfile --ssl-keyfile` with a self-signed certificate made here, checked by a real HTTPS
client that verifies the certificate (and by one that does not trust it); bad files exit 2 before the load."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from runtime_bundle import write_bundle
from servers import Server

KEY = "tls-test-key-0123456789ab"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, signed by its own key: (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_https_with_a_self_signed_certificate(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "bundle")
    cert, key = self_signed(tmp_path)
    server = Server([sys.executable, "-m", "infc_runtime", "serve", str(bundle), "--port", "{port}",
                     "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)], tmp_path / "server.log",
                    env={**os.environ, "INFC_API_KEYS": f"tls:{KEY}"})
    trusted = ssl.create_default_context(cafile=str(cert))  # verifies the chain and the host name
    try:
        with httpx.Client(base_url=f"https://localhost:{server.port}", verify=trusted) as client:
            deadline = time.monotonic() + 60
            while True:
                assert server.process.poll() is None, server.log.read_text()
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, server.log.read_text()
                    time.sleep(0.05)
            answer = client.get("/v2/models/toy", headers={"Authorization": f"Bearer {KEY}"})
            assert answer.status_code == 200 and answer.json()["name"] == "toy"
            assert answer.extensions["http_version"] == b"HTTP/1.1"
        with (httpx.Client(base_url=f"https://127.0.0.1:{server.port}", verify=trusted) as by_address,
              httpx.Client(base_url=f"https://localhost:{server.port}") as untrusting,
              httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as plain):
            assert by_address.get("/v2/health/live").status_code == 200  # the certificate names the address
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                untrusting.get("/v2/health/live")  # the system's CAs do not know it: real TLS, really checked
            with pytest.raises(httpx.TransportError):
                plain.get("/v2/health/live")
        assert "Uvicorn running on https://127.0.0.1" in server.log.read_text()
    finally:
        assert server.stop() == 0, server.log.read_text()


def test_unusable_certificate_files_exit_2(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "bundle")
    cert, key = self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    other_cert, _ = self_signed(tmp_path / "other")  # a certificate of another key

    def serve(*options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "infc_runtime", "serve", str(bundle), "--port", "1",
                               *options], capture_output=True, text=True, timeout=60)

    alone = serve("--ssl-certfile", str(cert))
    assert alone.returncode == 2 and "--ssl-certfile and --ssl-keyfile go together" in alone.stderr
    mismatched = serve("--ssl-certfile", str(other_cert), "--ssl-keyfile", str(key))
    assert mismatched.returncode == 2 and "cannot load the certificate and key" in mismatched.stderr
    assert len(mismatched.stderr.strip().splitlines()) == 1
    missing = serve("--ssl-certfile", str(tmp_path / "nope.pem"), "--ssl-keyfile", str(key))
    assert missing.returncode == 2 and "nope.pem" in missing.stderr
    grpc = serve("--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--grpc-port", "1")
    assert grpc.returncode == 2 and "--grpc-port cannot be used with --ssl-certfile" in grpc.stderr
