// Package testcerts makes throwaway certificate authorities and node
// certificates for mutual-TLS tests. It imports nothing of Troupe, so the
// transport's own tests can use it.
package testcerts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// CA is a throwaway certificate authority for mutual-TLS tests.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// Pool trusts this CA only.
	Pool *x509.CertPool
}

// NewCA returns a CA valid for an hour either side of now.
func NewCA(tb testing.TB) *CA {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "troupe test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	require.NoError(tb, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(tb, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{cert: cert, key: k, Pool: pool}
}

// Issue returns a certificate usable as server and client, valid for
// 127.0.0.1 and the first sixteen test hosts (clustertest.Host(0) to
// Host(15): 127.0.0.2 to 127.0.0.17).
func (ca *CA) Issue(tb testing.TB) tls.Certificate {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)
	ips := []net.IP{net.IPv4(127, 0, 0, 1)}
	for i := range 16 {
		ips = append(ips, net.IPv4(127, 0, 0, byte(i+2)))
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "troupe node"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &k.PublicKey, ca.key)
	require.NoError(tb, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

// TLSConfig returns a node's config: a certificate from ca, trusting ca
// both as client and as server.
func (ca *CA) TLSConfig(tb testing.TB) *tls.Config {
	tb.Helper()
	return &tls.Config{Certificates: []tls.Certificate{ca.Issue(tb)}, RootCAs: ca.Pool, ClientCAs: ca.Pool}
}

// WriteFiles writes the CA's certificate and a certificate it issues
// (Issue), with its private key, as PEM files in dir, for programs that
// take files: it returns their paths.
func (ca *CA) WriteFiles(tb testing.TB, dir string) (caFile, certFile, keyFile string) {
	tb.Helper()
	c := ca.Issue(tb)
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	require.NoError(tb, err)
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem")
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{caFile, "CERTIFICATE", ca.cert.Raw}, {certFile, "CERTIFICATE", c.Certificate[0]}, {keyFile, "PRIVATE KEY", keyDER}} {
		require.NoError(tb, os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600))
	}
	return caFile, certFile, keyFile
}
