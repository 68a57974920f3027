#!/usr/bin/env python3
"""Writes a throwaway ES256 issuer for the load tests: signing key, JWKS and signed tokens.

Usage: mktokens.py OUT_DIR

Every target that checks tokens (Envoy today, phigate full once identity lands) gets the same
JWKS and the same tokens, so the comparison is about the proxies, not the token mix.
The lead will switch to the demo issuer's tokens (`phigate demo`) later; only this file changes.
"""
import base64
import json
import os
import sys
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER = "https://issuer.bench.local"
AUDIENCE = "phigate-bench"
KID = "bench-es256-1"
LIFETIME_SECS = 6 * 3600  # long enough for any run; tokens are regenerated every run


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(key, claims: dict) -> str:
    header = {"alg": "ES256", "typ": "JWT", "kid": KID}
    signing_input = b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64url(json.dumps(claims, separators=(",", ":")).encode())
    der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)  # JWS wants raw r||s (RFC 7518 §3.4), not DER
    return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def main() -> None:
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    with open(os.path.join(out, "issuer.key"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    numbers = key.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": KID,
           "x": b64url(numbers.x.to_bytes(32, "big")), "y": b64url(numbers.y.to_bytes(32, "big"))}
    with open(os.path.join(out, "jwks.json"), "w") as f:
        json.dump({"keys": [jwk]}, f)
    now = int(time.time())
    tokens = {}
    for n in range(1, 5):
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": f"clinician-{n}", "tenant": "tenant-a",
                  "roles": ["clinician"], "scope": "user/Patient.read user/Observation.read",
                  "amr": ["pwd", "mfa"], "acr": "urn:bench:loa:2", "auth_time": now,
                  "sid": f"session-{n}", "iat": now, "nbf": now - 60, "exp": now + LIFETIME_SECS}
        tokens[f"clinician-{n}"] = sign(key, claims)
    # A token without MFA: Envoy's RBAC (and phigate's policy) must refuse it; used as a check.
    claims["amr"] = ["pwd"]
    claims["sub"] = "no-mfa"
    tokens["no-mfa"] = sign(key, claims)
    with open(os.path.join(out, "tokens.json"), "w") as f:
        json.dump({"issuer": ISSUER, "audience": AUDIENCE, "kid": KID, "tokens": tokens}, f, indent=1)
    with open(os.path.join(out, "token"), "w") as f:
        f.write(tokens["clinician-1"])


if __name__ == "__main__":
    main()
