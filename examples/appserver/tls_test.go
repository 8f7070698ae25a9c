package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testTLS is a throwaway CA and one certificate, valid for 127.0.0.1-9,
// that every node of a test uses, as PEM files.
type testTLS struct {
	ca, cert, key string // file paths
	pool          *x509.CertPool
}

func newTestTLS(t *testing.T) *testTLS {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "appserver test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "appserver test node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for i := 1; i <= 9; i++ {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IPv4(127, 0, 0, byte(i)))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	tt := &testTLS{ca: filepath.Join(dir, "ca.pem"), cert: filepath.Join(dir, "node.pem"), key: filepath.Join(dir, "node-key.pem"), pool: x509.NewCertPool()}
	tt.pool.AddCert(caCert)
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{tt.ca, "CERTIFICATE", caDER}, {tt.cert, "CERTIFICATE", der}, {tt.key, "PRIVATE KEY", keyDER}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return tt
}

// TestTLS: a manager and a worker with HTTPS only and mutual TLS between
// them: they form a cluster, the console reads the worker's status over
// https, and a session works with a Secure cookie.
func TestTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	tt := newTestTLS(t)
	c := newCluster(t)
	mgr := c.start(ctx, t, nodeSpec{role: roleManager, name: "manager", ip: "127.0.0.2", tls: tt})
	w := c.start(ctx, t, nodeSpec{role: roleWorker, name: "worker", ip: "127.0.0.3", wka: mgr.gossip, tls: tt})
	if !strings.HasPrefix(w.url, "https://") {
		t.Fatalf("worker URL %q, want https", w.url)
	}
	c.waitState(ctx, t, mgr, "two members, the worker's https offer, both statuses", func(st consoleState) bool {
		of := offers(st, "services/web")
		return len(aliveMembers(st)) == 2 && reachable(st) == 2 && len(of) == 1 && of[0] == w.name &&
			st.Bindings[0].Offers[0].Value == w.url
	})

	cl := newClient(t, tt)
	r, err := cl.do(w, http.MethodPost, "/counter", "", nil)
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("POST /counter over https: %v %s", err, r)
	}
	if v := decode[counterReply](t, r); v.Value != 1 {
		t.Errorf("POST /counter: %+v", v)
	}
	if sc := r.header.Get("Set-Cookie"); !strings.Contains(sc, "Secure") {
		t.Errorf("session cookie over https without Secure: %q", sc)
	}
}
