#!/bin/sh
# One-shot init for the compose mesh (service `init`, runs as root, then exits):
#  - copies the dev PKI from the read-only bind mount ($PKI_SRC) into the `pki` volume,
#    owned by the services' user, WITHOUT the CA key and the JWT signing key;
#  - puts the JWT signing key (tenancy only needs it) and the master key into `secrets`;
#  - mints one service token per service (7 days, like `make up`) into `secrets/tokens`.
# Re-running it (every `docker compose up`) refreshes the tokens and keeps the master key.
set -eu
PKI_SRC="${PKI_SRC:-/pki-src}"
PKI_DIR="${PKI_DIR:-/etc/healing-guard/pki}"
SECRETS_DIR="${SECRETS_DIR:-/etc/healing-guard/secrets}"
HG_UID="${HG_UID:-10001}"
HG_GID="${HG_GID:-10001}"
SERVICES="detector predictor planner tenancy audit coordinator"

for f in ca.pem jwks.json signing-key.pem gateway.pem gateway-key.pem; do
    [ -f "$PKI_SRC/$f" ] || { echo "init: $PKI_SRC/$f missing; run: python -m deploy.pki.make_pki" >&2; exit 1; }
done
mkdir -p "$PKI_DIR" "$SECRETS_DIR/tokens"
umask 077
for name in $SERVICES gateway; do
    cp "$PKI_SRC/$name.pem" "$PKI_DIR/$name.pem"
    cp "$PKI_SRC/$name-key.pem" "$PKI_DIR/$name-key.pem"
done
cp "$PKI_SRC/ca.pem" "$PKI_SRC/jwks.json" "$PKI_DIR/"
cp "$PKI_SRC/signing-key.pem" "$SECRETS_DIR/signing-key.pem"
for name in $SERVICES; do
    python -m deploy.pki.mint_token --pki "$PKI_SRC" --tenant '*' --role service --subject "$name" \
        --ttl 604800 > "$SECRETS_DIR/tokens/$name.jwt.tmp"
    mv "$SECRETS_DIR/tokens/$name.jwt.tmp" "$SECRETS_DIR/tokens/$name.jwt"
done
if [ ! -s "$SECRETS_DIR/master.key" ]; then
    python -c 'import secrets; print(secrets.token_hex(32))' > "$SECRETS_DIR/master.key"
fi
chmod 0644 "$PKI_DIR"/*.pem "$PKI_DIR/jwks.json"
chmod 0600 "$PKI_DIR"/*-key.pem "$SECRETS_DIR"/*.pem "$SECRETS_DIR/master.key" "$SECRETS_DIR"/tokens/*.jwt
if [ "$(id -u)" = 0 ]; then
    chown -R "$HG_UID:$HG_GID" "$PKI_DIR" "$SECRETS_DIR"
fi
echo "init: PKI in $PKI_DIR, tokens and keys in $SECRETS_DIR"
