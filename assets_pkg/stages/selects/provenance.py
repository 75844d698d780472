"""Provenance inside each published rendition: XMP that says the picture is AI-generated (IPTC
DigitalSourceType, which Google Merchant Center asks to keep and Meta reads for its "AI info" label), then a
C2PA manifest signed with the brand's certificate (c2pa-python): the action and the image model as its
software agent, the product pictures and the base image as ingredients with their hashes, and the approval.

Metadata first, signature last: the signature binds the bytes, XMP included. The private key is read from
C2PA_PRIVATE_KEY when a run signs and stays in memory; no line, file or metadata holds it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ...domain import storage
from ...domain.errors import StudioError

IPTC_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/"
GENERATED = IPTC_SOURCE + "trainedAlgorithmicMedia"
COMPOSITE = IPTC_SOURCE + "compositeWithTrainedAlgorithmicMedia"  # a photograph (base image) edited by a model
MIME = {"jpeg": "image/jpeg", "png": "image/png"}
REVIEW_ASSERTION = "com.dropstudio.review"


class SigningError(StudioError):
    """The configured certificate or key cannot sign (one line, nothing published)."""


@dataclass
class Provenance:
    """What a rendition says about itself."""

    title: str
    brief: str  # the brief's id
    prompt: str
    skus: list[str]
    model: str  # the image model (its software agent)
    edited: bool  # a base image or a revision: c2pa.edited
    channel: str
    reviewer: str
    approved_at: str
    ingredients: list[dict] = field(default_factory=list)  # [{title, sha256, path, relationship}]
    photograph: bool = False  # a base image (a photograph) was edited: the source type is a composite

    @property
    def source_type(self) -> str:
        return COMPOSITE if self.photograph else GENERATED


def write_xmp(data: bytes, facts: Provenance) -> bytes:
    """The encoded image with its XMP: source type, title, the brief (prompt, and its id as the job
    reference) and the SKUs shown."""
    import pyexiv2

    image = pyexiv2.ImageData(data)
    try:
        xmp = {"Xmp.iptcExt.DigitalSourceType": facts.source_type, "Xmp.dc.title": facts.title,
               "Xmp.dc.description": facts.prompt, "Xmp.photoshop.TransmissionReference": facts.brief}
        if facts.skus:
            xmp["Xmp.dc.subject"] = list(facts.skus)
        image.modify_xmp(xmp)
        return image.get_bytes()
    finally:
        image.close()


class BrandSigner:
    """The brand's certificate chain and key, checked once: a certificate that is expired, not for signing, or
    not the key's is one line naming the setting, before anything is published."""

    def __init__(self, chain: bytes, key: bytes, alg: str, subject: str, fingerprint: str):
        self._chain, self._key, self.alg, self.subject, self.fingerprint = chain, key, alg, subject, fingerprint

    def __repr__(self) -> str:  # never the key
        return f"BrandSigner({self.subject!r}, {self.alg})"

    @classmethod
    def load(cls, cert_location: str, key_location: str, now: datetime | None = None) -> "BrandSigner":
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        chain = _read("C2PA_SIGN_CERT", cert_location)
        key_pem = _read("C2PA_PRIVATE_KEY", key_location)
        try:
            certs = x509.load_pem_x509_certificates(chain)
        except ValueError:
            raise SigningError(f"C2PA_SIGN_CERT {cert_location}: not a PEM certificate chain") from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError):
            raise SigningError(f"C2PA_PRIVATE_KEY {key_location}: not an unencrypted PEM private key") from None
        leaf = certs[0]
        now = now or datetime.now(timezone.utc)
        where = f"C2PA_SIGN_CERT {cert_location}"
        if leaf.not_valid_after_utc <= now:
            raise SigningError(f"{where}: the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
        if leaf.not_valid_before_utc > now:
            raise SigningError(f"{where}: the certificate is not valid before {leaf.not_valid_before_utc:%Y-%m-%d}")
        try:
            usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
            signs = usage.digital_signature
        except x509.ExtensionNotFound:
            signs = False
        if not signs:
            raise SigningError(f"{where}: the certificate is not for signing (its key usage lacks digitalSignature)")
        pub = serialization.PublicFormat.SubjectPublicKeyInfo
        if leaf.public_key().public_bytes(serialization.Encoding.DER, pub) != \
                key.public_key().public_bytes(serialization.Encoding.DER, pub):
            raise SigningError(f"{where}: the certificate is not C2PA_PRIVATE_KEY's (another key signed for it)")
        if isinstance(key, ec.EllipticCurvePrivateKey):
            alg = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}.get(key.curve.name)
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            alg = "ed25519"
        elif isinstance(key, rsa.RSAPrivateKey):
            alg = "ps256"
        else:
            alg = None
        if alg is None:
            raise SigningError(f"C2PA_PRIVATE_KEY {key_location}: C2PA signs with ECDSA P-256/384/521, Ed25519 or "
                               f"RSA-PSS keys")
        subject = leaf.subject.rfc4514_string()
        return cls(chain, key_pem, alg, subject, leaf.fingerprint(hashes.SHA256()).hex())

    def sign(self, data: bytes, fmt: str, facts: Provenance, ingredient_bytes: dict[str, bytes]) -> bytes:
        """`data` with a C2PA manifest of `facts`, signed (the ingredients' own bytes by sha256)."""
        import c2pa

        mime = MIME[fmt]
        actions = [{"action": "c2pa.edited" if facts.edited else "c2pa.created", "digitalSourceType": facts.source_type,
                    "softwareAgent": {"name": facts.model}},
                   {"action": "c2pa.resized", "parameters": {"channel": facts.channel}}]
        manifest = {"claim_generator_info": [{"name": "Drop Studio"}], "title": facts.title,
                    "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": actions}},
                                   {"label": REVIEW_ASSERTION, "data": {"decision": "approve", "reviewer": facts.reviewer,
                                                                        "approved_at": facts.approved_at,
                                                                        "channel": facts.channel, "skus": facts.skus}}]}
        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(self.alg.encode(), self._chain, self._key, None))
        context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
        try:
            builder = c2pa.Builder(manifest, context=context)
            for ing in facts.ingredients:
                raw = ingredient_bytes.get(ing["sha256"])
                if raw is None:
                    continue
                builder.add_ingredient({"title": ing["title"], "relationship": ing["relationship"],
                                        "metadata": {"dropstudio:sha256": ing["sha256"], "dropstudio:path": ing["path"]}},
                                       _sniff(raw), io.BytesIO(raw))
            out = io.BytesIO()
            builder.sign(signer, mime, io.BytesIO(data), out)
            return out.getvalue()
        except c2pa.C2paError as e:
            raise SigningError(f"C2PA signing failed: {str(e).splitlines()[0][:200]}") from None
        finally:
            signer.close()


def _read(setting: str, location: str) -> bytes:
    try:
        return storage.read_bytes(storage.location(setting, location))
    except FileNotFoundError:
        raise SigningError(f"{setting} {location}: no such file") from None


def _sniff(raw: bytes) -> str:
    if raw.startswith(b"\x89PNG"):
        return "image/png"
    if raw.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"
