"""A test certificate authority and a brand's signing certificate issued by it (ES256: digitalSignature,
emailProtection, AKI/SKI, as C2PA wants), written as PEM files. `expired`, `for_signing=False` and
`other_key` make the certificates a brand gets wrong."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _usage(sign: bool, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=sign, key_cert_sign=ca, crl_sign=ca, content_commitment=False,
                         key_encipherment=not sign, data_encipherment=False, key_agreement=False,
                         encipher_only=False, decipher_only=False)


def make_signing_files(folder: Path, expired: bool = False, for_signing: bool = True,
                       other_key: bool = False) -> dict[str, Path]:
    """{"ca", "chain", "key"} PEM files under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Drop Studio test CA"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Drop Studio tests")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=30))
          .not_valid_after(now + datetime.timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(_usage(True, ca=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1()) if other_key else key
    until = now - datetime.timedelta(days=1) if expired else now + datetime.timedelta(days=90)
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Brand signer"),
                                     x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Brand")]))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=20)).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(for_signing), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    files = {"ca": folder / "ca.pem", "chain": folder / "chain.pem", "key": folder / "brand.key"}
    files["ca"].write_bytes(ca.public_bytes(pem))
    files["chain"].write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    files["key"].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return files
