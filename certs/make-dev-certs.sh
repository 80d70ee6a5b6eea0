#!/usr/bin/env bash
# Make a development CA and certificates signed by it, for `make run-tls` and the tests.
# Never use these in production: the CA key sits next to them, unencrypted.
#
#   certs/make-dev-certs.sh [DIR]     (default: the certs/ folder)
#
# Writes: ca.pem ca.key (the CA), server.pem server.key (localhost, 127.0.0.1, ::1; PKCS#8),
# client.pem client.key (a client certificate for mTLS, CN=tricorn-client).
set -euo pipefail
dir=${1:-"$(cd "$(dirname "$0")" && pwd)"}
mkdir -p "$dir"
cd "$dir"
days=825

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
  -subj "/O=tricorn development/CN=tricorn development CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout ca.key -out ca.pem 2>/dev/null

issue() { # name subject extensions
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" \
    -extfile <(printf '%s\n' "$3") -out "$1.pem" 2>/dev/null
  rm -f "$1.csr"
}
issue server "/O=tricorn development/CN=localhost" \
  "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
extendedKeyUsage=serverAuth"
issue client "/O=tricorn development/CN=tricorn-client" "extendedKeyUsage=clientAuth"
rm -f ca.srl
echo "wrote $dir/{ca,server,client}.{pem,key}"
