#!/usr/bin/env bash
# Regenerates the JWT test fixtures in this folder: the JWKS files and the pre-signed tokens
# are derived from the PEM keys; `--new-keys` first replaces the keys themselves.
#
# Needs only `openssl` and `python3` (standard library). These keys are for tests and the
# example config: never trust them anywhere real.
#
# After `--new-keys`, copy jwks.json over examples/jwks.json (the example config's JWKS).
set -euo pipefail
cd "$(dirname "$0")"

if [[ "${1:-}" == "--new-keys" ]]; then
  for name in rsa-1 rsa-2; do
    openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$name.pem"
  done
  # jsonwebtoken's EncodingKey::from_ec_pem wants PKCS#8.
  openssl ecparam -genkey -noout -name prime256v1 | openssl pkcs8 -topk8 -nocrypt -out ec-1.pem
fi

for name in rsa-1 rsa-2; do
  openssl pkey -in "$name.pem" -pubout -out "$name.pub.pem"
done
openssl pkey -in ec-1.pem -pubout -out ec-1.pub.pem

python3 - <<'PY'
import base64, json, subprocess

ISSUER = "https://issuer.example.test/pool-1"
CLIENT = "app-client-1"
IAT = 1767225600          # 2026-01-01T00:00:00Z
EXP = 4102444800          # 2100-01-01T00:00:00Z: long-lived on purpose (fixtures)

def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def run(*args, data=None) -> bytes:
    return subprocess.run(args, input=data, check=True, capture_output=True).stdout

def rsa_jwk(pem: str, kid: str) -> dict:
    modulus = run("openssl", "pkey", "-in", pem, "-pubin", "-noout", "-text")
    text = modulus.decode()
    assert "65537" in text, "fixtures assume e = 65537"
    hexn = run("openssl", "rsa", "-pubin", "-in", pem, "-noout", "-modulus").decode()
    n = bytes.fromhex(hexn.strip().split("=", 1)[1])
    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": b64u(n), "e": b64u((65537).to_bytes(3, "big"))}

def ec_jwk(pem: str, kid: str) -> dict:
    der = run("openssl", "pkey", "-pubin", "-in", pem, "-outform", "DER")
    point = der[-65:]
    assert point[0] == 4, "uncompressed P-256 point expected"
    return {"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
            "x": b64u(point[1:33]), "y": b64u(point[33:])}

rsa1 = rsa_jwk("rsa-1.pub.pem", "tollgate-test-rsa-1")
ec1 = ec_jwk("ec-1.pub.pem", "tollgate-test-ec-1")
rsa2 = rsa_jwk("rsa-2.pub.pem", "tollgate-test-rsa-2")
for path, keys in [("jwks.json", [rsa1, ec1]), ("jwks-rotated.json", [rsa1, ec1, rsa2])]:
    with open(path, "w") as f:
        json.dump({"keys": keys}, f, indent=2)
        f.write("\n")

def der_ecdsa_to_raw(der: bytes) -> bytes:
    # SEQUENCE { INTEGER r, INTEGER s } -> r || s, 32 bytes each.
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        length = der[i + 1]
        value = der[i + 2:i + 2 + length]
        out += value.lstrip(b"\0").rjust(32, b"\0")
        i += 2 + length
    return out

def sign(alg: str, kid: str, pem: str, claims: dict) -> str:
    header = {"alg": alg, "kid": kid, "typ": "JWT"}
    signing_input = (b64u(json.dumps(header, separators=(",", ":")).encode()) + "." +
                     b64u(json.dumps(claims, separators=(",", ":")).encode()))
    sig = run("openssl", "dgst", "-sha256", "-sign", pem, data=signing_input.encode())
    if alg == "ES256":
        sig = der_ecdsa_to_raw(sig)
    return signing_input + "." + b64u(sig)

def id_claims(sub: str, username: str) -> dict:
    return {"sub": sub, "iss": ISSUER, "aud": CLIENT, "token_use": "id",
            "cognito:username": username, "cognito:groups": ["admins", "users"],
            "email": f"{username}@example.test", "email_verified": True,
            "auth_time": IAT, "iat": IAT, "exp": EXP}

access = {"sub": "user-1234", "iss": ISSUER, "client_id": CLIENT, "token_use": "access",
          "scope": "openid pets/read pets/write", "username": "alice",
          "auth_time": IAT, "iat": IAT, "exp": EXP}

tokens = {
    "id-rsa-1.jwt": sign("RS256", "tollgate-test-rsa-1", "rsa-1.pem", id_claims("user-1234", "alice")),
    "id-ec-1.jwt": sign("ES256", "tollgate-test-ec-1", "ec-1.pem", id_claims("user-1234", "alice")),
    "access-rsa-1.jwt": sign("RS256", "tollgate-test-rsa-1", "rsa-1.pem", access),
    "id-rsa-2.jwt": sign("RS256", "tollgate-test-rsa-2", "rsa-2.pem", id_claims("user-5678", "bob")),
    # A kid that no JWKS here contains.
    "id-unknown-kid.jwt": sign("RS256", "tollgate-test-rsa-3", "rsa-2.pem", id_claims("user-9999", "mallory")),
}
for path, token in tokens.items():
    with open(path, "w") as f:
        f.write(token + "\n")
PY
echo "fixtures written to $(pwd)"
