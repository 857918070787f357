#!/usr/bin/env bash
# Regenerates the certificate fixtures of the bad-input corpus (certs/).
# Run once; the outputs are committed. Valid ones last 20 years so the tests
# do not rot; the expired CA expired in 2001.
set -euo pipefail
cd "$(dirname "$0")/certs"
days=7300
ca() { # name cn
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$1.key" -out "$1.pem" -days "$days" -subj "/O=nca corpus/CN=$2" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}
ca good-ca "Corpus Good CA"
ca issuer-ca "Corpus Issuer CA"
rm -f good-ca.key
# A non-CA leaf issued by issuer-ca.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key \
  -out leaf.csr -subj "/O=nca corpus/CN=registry.corpus.test" 2>/dev/null
printf 'basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:registry.corpus.test\n' > leaf.ext
openssl x509 -req -in leaf.csr -CA issuer-ca.pem -CAkey issuer-ca.key -CAcreateserial \
  -days "$days" -extfile leaf.ext -out leaf.pem 2>/dev/null
mv leaf.csr request.csr
rm -f leaf.ext issuer-ca.srl
# An expired CA, valid 2000-01-01 .. 2001-01-01 (`openssl ca` takes explicit
# dates on OpenSSL 3.0, which has no `req -not_after`).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/exp.key" \
  -out "$work/exp.csr" -subj "/O=nca corpus/CN=Corpus Expired CA" 2>/dev/null
touch "$work/index.txt"
cat > "$work/ca.cnf" <<CNF
[ca]
default_ca = d
[d]
database = $work/index.txt
new_certs_dir = $work
serial = $work/serial
default_md = sha256
policy = p
x509_extensions = ext
[p]
commonName = supplied
organizationName = supplied
[ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
CNF
echo 01 > "$work/serial"
openssl ca -batch -config "$work/ca.cnf" -selfsign -keyfile "$work/exp.key" -in "$work/exp.csr" \
  -startdate 20000101000000Z -enddate 20010101000000Z -notext -out expired-ca.pem 2>/dev/null
# Eleven distinct CAs in one bundle.
: > eleven-cas.pem
for i in $(seq -w 1 11); do
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
    -out - -days "$days" -subj "/O=nca corpus/CN=Corpus CA $i" \
    -addext basicConstraints=critical,CA:TRUE 2>/dev/null >> eleven-cas.pem
done
# Other encodings of good-ca.
openssl x509 -in good-ca.pem -outform DER -out good-ca.der
openssl crl2pkcs7 -nocrl -certfile good-ca.pem -out good-ca.p7b
openssl crl2pkcs7 -nocrl -certfile good-ca.pem -outform DER -out good-ca.p7b.der
openssl x509 -in good-ca.pem -trustout -addtrust serverAuth -out good-ca.trusted.pem
# Private keys: PKCS#8 and traditional RSA.
mv leaf.key private-key-pkcs8.pem
openssl genrsa -traditional -out private-key-rsa.pem 2048 2>/dev/null
rm -f issuer-ca.key

# The Secret values of the corpus (keys/), derived from the certificates.
cd ..
rm -rf keys && mkdir keys && cd keys
good=../certs/good-ca.pem
body() { sed -e '1d' -e '$d' "$1"; }
: > empty.crt
printf '\n  \n\t\n' > whitespace.crt
sed '$d' "$good" > no-end-line.crt
printf -- '-----BEGIN CERTIFICATE-----\nbroken\n' > begin-only.crt
{ echo '-----BEGIN CERTIFICATE-----'; body "$good" | tr -d '\n' | cut -c1-300; echo; echo '-----END CERTIFICATE-----'; } > truncated-base64.crt
sed '2s/^\(....\)/\1!/' "$good" > damaged-base64.crt
sed '$s/CERTIFICATE/PKCS7/' "$good" > mismatched-end.crt
printf -- '-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n' > base64-not-a-cert.crt
printf 'please trust our registry, thanks\n' > garbage-text.crt
sed 's/$/\r/' "$good" > crlf.crt
base64 -w0 "$good" > double-base64.crt
cp ../certs/good-ca.der der.crt
base64 -w64 ../certs/good-ca.der > base64-der-no-armour.crt
cp ../certs/good-ca.p7b pkcs7.p7b
cp ../certs/good-ca.p7b.der pkcs7-der.p7b
cp ../certs/good-ca.trusted.pem trusted-certificate.crt
cp ../certs/request.csr csr.crt
cp ../certs/private-key-pkcs8.pem private-key-pkcs8.key
cp ../certs/private-key-rsa.pem private-key-rsa.key
cat "$good" ../certs/private-key-pkcs8.pem > ca-with-private-key.crt
cp ../certs/leaf.pem non-ca-leaf.crt
cp ../certs/expired-ca.pem expired-ca.crt
cat ../certs/expired-ca.pem ../certs/leaf.pem > expired-and-leaf.crt
cp ../certs/eleven-cas.pem eleven-cas.crt
sed '3s/^\(..........\)/\1\x00/' "$good" > nul-bytes.crt
{ printf '# r\xe9seau interne\n'; cat "$good"; } > non-utf8.crt
{ printf '\xff\xfe'; iconv -f UTF-8 -t UTF-16LE "$good"; } > utf16le.crt
{ printf '\xef\xbb\xbf'; cat "$good"; } > utf8-bom.crt
chmod 0644 ../certs/* ./*
