#!/usr/bin/env bash
# certs.sh — a cluster CA and one key + certificate per party, for
# splitchain's mutual TLS (--tls-cert, --tls-key, --tls-ca).
#   deploy/certs.sh DIR NAME[=EXTRA,...]...
# Makes DIR/ca.pem + DIR/ca.key once (kept when present: every party must
# share one CA), then DIR/NAME.pem + DIR/NAME.key for each NAME. A
# certificate names NAME, localhost and 127.0.0.1; EXTRA adds host names
# and IP addresses, e.g. worker-1=host1.example,10.0.0.5. Keys are mode
# 0600. Give each party its NAME.pem, NAME.key and ca.pem; ca.key stays
# with whoever issues certificates.
set -euo pipefail

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
DIR=$1
shift
command -v openssl >/dev/null || { echo "certs.sh: openssl not found (apt-get install openssl)" >&2; exit 1; }
for spec in "$@"; do
  name=${spec%%=*}
  [[ $name =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] ||
    { echo "certs.sh: bad party name '$name' (letters, digits, '.', '_', '-')" >&2; exit 2; }
  [ "$name" != ca ] || { echo "certs.sh: 'ca' is the CA's own name; pick another" >&2; exit 2; }
done
mkdir -p "$DIR"
umask 077
DAYS=${SC_CERT_DAYS:-825}

if [ ! -f "$DIR/ca.pem" ] || [ ! -f "$DIR/ca.key" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
    -keyout "$DIR/ca.key" -out "$DIR/ca.pem" -days "$DAYS" -subj "/CN=splitchain cluster CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null || { echo "certs.sh: openssl could not make the CA in $DIR" >&2; exit 1; }
  chmod 0600 "$DIR/ca.key"
  chmod 0644 "$DIR/ca.pem"
  echo "certs.sh: made the CA $DIR/ca.pem"
fi

ip_re='^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$|:'
for spec in "$@"; do
  name=${spec%%=*}
  extra=""
  [ "$spec" = "$name" ] || extra=${spec#*=}
  # mbedTLS 2 (nng's TLS) matches a dialled address only against DNS
  # names, so every IP address is listed as both an IP and a DNS name.
  san="DNS:$name,DNS:localhost,IP:127.0.0.1,DNS:127.0.0.1"
  IFS=, read -r -a more <<< "$extra"
  for e in ${more[@]+"${more[@]}"}; do
    [ -n "$e" ] || continue
    if [[ $e =~ $ip_re ]]; then san="$san,IP:$e,DNS:$e"; else san="$san,DNS:$e"; fi
  done
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
    -keyout "$DIR/$name.key" -out "$tmp/req.csr" -subj "/CN=$name" 2>/dev/null ||
    { echo "certs.sh: openssl could not make a key for $name" >&2; exit 1; }
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=serverAuth,clientAuth\n' \
    "$san" > "$tmp/ext.cnf"
  openssl x509 -req -in "$tmp/req.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
    -out "$DIR/$name.pem" -days "$DAYS" -sha256 -extfile "$tmp/ext.cnf" 2>/dev/null ||
    { echo "certs.sh: openssl could not sign $name's certificate (is $DIR/ca.key the CA's key?)" >&2; exit 1; }
  chmod 0600 "$DIR/$name.key"
  chmod 0644 "$DIR/$name.pem"
  rm -rf "$tmp"
  echo "certs.sh: $DIR/$name.pem ($san)"
done
