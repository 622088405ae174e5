#!/usr/bin/env bash
# Shared by bench/compare.sh and bench/pgo.sh (sourced, not run).

# make_certs DIR: an ECDSA P-256 CA, a server certificate for localhost and
# 127.0.0.1, a client certificate (URI SAN spiffe://bench/client), and
# cert+key bundles for HAProxy (server.pem, client.pem).
make_certs() {
  local d=$1 n san eku
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  for n in server client; do
    san="DNS:localhost,IP:127.0.0.1" eku=serverAuth
    [[ $n == client ]] && san="URI:spiffe://bench/client" eku=clientAuth
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=bench-$n" \
      -keyout "$d/$n.key" -out "$d/$n.csr" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' "$san" "$eku" >"$d/$n.ext"
    openssl x509 -req -in "$d/$n.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
      -extfile "$d/$n.ext" -out "$d/$n.crt" 2>/dev/null
    cat "$d/$n.crt" "$d/$n.key" >"$d/$n.pem"
  done
}
