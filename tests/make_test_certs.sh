#!/usr/bin/env bash
# Makes throw-away TLS material for the transport-security tests, with the
# openssl command-line tool (Debian package openssl):
#   ca.pem / ca.key                  the test CA
#   server.pem / server.key          the teacher, for 127.0.0.1, ::1 and localhost
#   client.pem / client.key          a student, signed by the test CA
#   other_ca.pem                     a CA nobody trusts
#   other_client.pem / other_client.key  a student signed by that other CA
# Usage: tests/make_test_certs.sh DIR   (DIR is created; nothing else is touched)
set -euo pipefail
dir="$1"
mkdir -p "$dir"
cd "$dir"
days=2
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

make_ca() {  # name subject
  openssl req -x509 "${ec[@]}" -keyout "$1.key" -out "$1.pem" -days "$days" -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
}
make_leaf() {  # name ca subject extensions
  openssl req "${ec[@]}" -keyout "$1.key" -out "$1.csr" -subj "/CN=$3" 2>/dev/null
  printf '%s\n' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -out "$1.pem" \
    -days "$days" -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

make_ca ca "Distillery test CA"
make_ca other_ca "Untrusted test CA"
make_leaf server ca "teacher" \
  "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost
extendedKeyUsage=serverAuth"
make_leaf client ca "student" "extendedKeyUsage=clientAuth"
make_leaf other_client other_ca "impostor" "extendedKeyUsage=clientAuth"
chmod 600 ./*.key
echo "test certificates in $dir"
