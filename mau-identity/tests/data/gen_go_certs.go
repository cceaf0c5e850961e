// Generates the Go certificate fixtures (go run gen_go_certs.go, Go 1.19+, stdlib only).
// Same template as the Go implementation's buildCertificateTemplate (account.go).
package main

import (
	"crypto/ed25519"
	"crypto/sha1"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/big"
	"os"
	"time"
)

func fpr(pub []byte, created uint32) string {
	body := []byte{4}
	c := make([]byte, 4)
	binary.BigEndian.PutUint32(c, created)
	body = append(body, c...)
	body = append(body, 22, 9, 0x2b, 0x06, 0x01, 0x04, 0x01, 0xda, 0x47, 0x0f, 0x01, 0x01, 0x07, 0x40)
	body = append(body, pub...)
	h := sha1.New()
	h.Write([]byte{0x99, 0, byte(len(body))})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

func main() {
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = 7
	}
	key := ed25519.NewKeyFromSeed(seed)
	pub := key.Public().(ed25519.PublicKey)
	created := uint32(1700000000)
	creation := time.Unix(int64(created), 0)
	for i, names := range [][]string{{"192.0.2.7:4433", fpr(pub, created)}, {fpr(pub, created)}} {
		template := x509.Certificate{
			Version:      3,
			DNSNames:     names,
			SerialNumber: big.NewInt(1),
			NotBefore:    creation,
			NotAfter:     creation.AddDate(100, 0, 0),
			KeyUsage:     x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{
				x509.ExtKeyUsageServerAuth,
				x509.ExtKeyUsageClientAuth,
			},
			BasicConstraintsValid: true,
		}
		der, err := x509.CreateCertificate(nil, &template, &template, pub, key)
		if err != nil {
			panic(err)
		}
		os.WriteFile(fmt.Sprintf("go_cert_%s.der", []string{"with_address", "no_address"}[i]), der, 0644)
	}
	fmt.Println(fpr(pub, created))
}
