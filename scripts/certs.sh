#!/usr/bin/env bash
# Throw-away certificates for the security tests, made fresh by each test run:
#   scripts/certs.sh DIR
# DIR/ca.crt           the test CA (clients trust it)
# DIR/broker.crt/.key  the brokers' certificate (CN and SAN localhost, 127.0.0.1), signed by the CA
# DIR/broker.p12       the same with the CA, as a PKCS#12 keystore for Kafka (password: DIR/store-password)
# DIR/other-ca.crt     a CA that signed nothing here: a client trusting only it must refuse the brokers
# Nothing here is secret beyond the test run; keys are never reused.
set -euo pipefail
dir=${1:?usage: certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
if [ -f broker.p12 ] && [ -f other-ca.crt ]; then exit 0; fi
days=30
openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=spa-dat test CA" \
  -keyout ca.key -out ca.crt 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=spa-dat other CA" \
  -keyout other-ca.key -out other-ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout broker.key -out broker.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > broker.ext
openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
  -extfile broker.ext -out broker.crt 2>/dev/null
echo "spa-dat-test-$RANDOM$RANDOM" > store-password
openssl pkcs12 -export -in broker.crt -inkey broker.key -certfile ca.crt -name broker \
  -passout "file:store-password" -out broker.p12
chmod 600 ./*.key broker.p12 store-password
# Mosquitto drops root privileges to read these: its key must stay readable to it.
chmod 644 broker.key
