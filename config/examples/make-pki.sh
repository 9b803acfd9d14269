#!/bin/sh
# Mint a demo PKI for config/examples/encrypted.toml with openssl only:
#   ca.crt/ca.key          a CA for servers and agents
#   server.crt/server.key  the resolver, for 127.0.0.1 and localhost
#   build.crt/build.key    agent spiffe://example.test/agents/build/1
#   research.crt/.key      agent spiffe://example.test/agents/research/1
#   ca.crl                 an empty CRL (revoke with: openssl ca -config DIR/ca.cnf -revoke X.crt; then re-run gencrl)
#   token.key/token.pub    an Ed25519 key pair for `dnsward token issue` and [tls.tokens]
# Usage: config/examples/make-pki.sh DIR   (default: config/examples/pki)
set -eu
DIR=${1:-$(dirname "$0")/pki}
DAYS=${DAYS:-30}
mkdir -p "$DIR"
cd "$DIR"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -keyout ca.key -out ca.crt -subj "/CN=dnsward example CA" \
  -addext "basicConstraints=critical,CA:true" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

leaf() { # name subject san eku
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
  printf 'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' "$4" "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
    -days "$DAYS" -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
leaf server "/CN=localhost" "DNS:localhost,IP:127.0.0.1" serverAuth
leaf build "/CN=build-1" "URI:spiffe://example.test/agents/build/1" clientAuth
leaf research "/CN=research-1" "URI:spiffe://example.test/agents/research/1" clientAuth

# An (empty) CRL, so revocation can be tried by re-issuing it.
cat > ca.cnf <<CNF
[ca]
default_ca = demo
[demo]
database = index.txt
crlnumber = crlnumber
default_md = sha256
default_crl_days = 30
certificate = ca.crt
private_key = ca.key
CNF
: > index.txt
[ -f crlnumber ] || echo 01 > crlnumber
openssl ca -config ca.cnf -gencrl -out ca.crl 2>/dev/null

openssl genpkey -algorithm ed25519 -out token.key
openssl pkey -in token.key -pubout -out token.pub
chmod 600 ./*.key
echo "PKI written to $DIR"
ls
