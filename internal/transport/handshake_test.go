package transport

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// The listener's side of the handshake as the fuzz target runs it: a
// fixed hello (zero nonce), so that a seed can carry valid key proofs.
var fuzzKey = key(9)

func fuzzListenerHello(mode uint8) hello {
	return hello{version: protocolVersion, mode: mode, maxFrame: DefaultMaxFrameSize, name: "listener"}
}

// maxHandshakeAlloc bounds what the listener allocates for one handshake,
// whatever the peer sends: a hello names at most 255 bytes, a key offer
// holds at most maxKeys first Noise messages, each tried with each of the
// listener's keys (a Noise handshake state is about 2 KiB). The bound is
// loose so that the test does not measure the runtime.
const maxHandshakeAlloc = 256 << 10

// handshakeSeeds returns what a dialer might send the fuzz listener,
// valid and not, by name.
func handshakeSeeds() map[string][]byte {
	dialer := func(mode uint8, name string) []byte {
		return hello{version: protocolVersion, mode: mode, maxFrame: DefaultMaxFrameSize, name: name}.marshal()
	}
	// offer appends a key offer to a key-mode hello: one first Noise
	// message per key, made over the transcript with the fuzz listener.
	offer := func(h []byte, keys ...[]byte) []byte {
		transcript := append(bytes.Clone(h), fuzzListenerHello(modeKey).marshal()...)
		b := append(bytes.Clone(h), byte(len(keys)))
		for _, k := range keys {
			hs, err := newNoise(true, transcript, k)
			if err != nil {
				panic(err)
			}
			if b, _, _, err = hs.WriteMessage(b, nil); err != nil {
				panic(err)
			}
		}
		return b
	}
	keyHello := dialer(modeKey, "node-a")
	old := dialer(modePlain, "node-a")
	old[4] = minProtocolVersion - 1
	longName := dialer(modePlain, "")
	longName[helloSize] = 255
	return map[string][]byte{
		"plain":            dialer(modePlain, "node-a"),
		"plain-then-frame": append(dialer(modePlain, ""), encodeFrame(frame{kind: kindPing})...),
		"key":              offer(keyHello, fuzzKey),
		"key-second-proof": offer(keyHello, key(1), fuzzKey),
		"key-wrong":        offer(keyHello, key(1)),
		"key-no-proofs":    offer(keyHello),
		"key-17-proofs":    append(bytes.Clone(keyHello), maxKeys+1),
		"key-cut-offer":    offer(keyHello, fuzzKey)[:len(keyHello)+10],
		"tls-mode":         dialer(modeTLS, "node-a"),
		"old-version":      old,
		"name-runs-past":   longName,
		"http":             []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + string(make([]byte, helloSize))),
		"tls-client-hello": {0x16, 0x03, 0x01, 0x00, 0xf8, 0x01, 0x00, 0x00, 0xf4, 0x03, 0x03},
	}
}

// FuzzHandshake feeds arbitrary bytes to the listener's side of the
// handshake, in plaintext and in cluster-key mode. It must never panic,
// must fail only with ErrHandshake, must allocate at most
// maxHandshakeAlloc whatever the bytes claim, and may succeed in
// cluster-key mode only with a proof of the key.
func FuzzHandshake(f *testing.F) {
	for _, b := range handshakeSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, mode := range []uint8{modePlain, modeKey} {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			s, err := handshake(bytes.NewReader(data), io.Discard, false, fuzzListenerHello(mode), [][]byte{key(1), fuzzKey})
			runtime.ReadMemStats(&after)
			if n := after.TotalAlloc - before.TotalAlloc; n > maxHandshakeAlloc {
				t.Fatalf("%s: the handshake allocated %d bytes, bound %d", modeName(mode), n, maxHandshakeAlloc)
			}
			if err != nil {
				if !errors.Is(err, ErrHandshake) {
					t.Fatalf("%s: error outside ErrHandshake: %v", modeName(mode), err)
				}
				continue
			}
			if s.peerMax < minFrameSize || len(s.peerName) > maxName {
				t.Fatalf("%s: accepted a peer with frames of %d bytes and a name of %d", modeName(mode), s.peerMax, len(s.peerName))
			}
			if mode == modeKey && (s.seal == nil || s.open == nil || s.key == nil) {
				t.Fatalf("cluster-key handshake succeeded without session keys")
			}
		}
	})
}

// The seeds do what their names say: the valid ones get through.
func TestHandshakeSeeds(t *testing.T) {
	seeds := handshakeSeeds()
	for name, mode := range map[string]uint8{"plain": modePlain, "plain-then-frame": modePlain, "key": modeKey, "key-second-proof": modeKey} {
		s, err := handshake(bytes.NewReader(seeds[name]), io.Discard, false, fuzzListenerHello(mode), [][]byte{fuzzKey})
		require.NoError(t, err, name)
		if mode == modeKey {
			require.Equal(t, fuzzKey, s.key, name)
		}
	}
	for _, name := range []string{"key-wrong", "key-no-proofs", "key-17-proofs", "key-cut-offer", "old-version", "name-runs-past"} {
		mode := modeKey
		if name == "old-version" || name == "name-runs-past" {
			mode = modePlain
		}
		_, err := handshake(bytes.NewReader(seeds[name]), io.Discard, false, fuzzListenerHello(mode), [][]byte{fuzzKey})
		require.ErrorIs(t, err, ErrHandshake, name)
	}
}

// TestWriteHandshakeCorpus regenerates testdata/fuzz/FuzzHandshake when
// TRANSPORT_WRITE_CORPUS=1.
func TestWriteHandshakeCorpus(t *testing.T) {
	if os.Getenv("TRANSPORT_WRITE_CORPUS") != "1" {
		t.Skip("set TRANSPORT_WRITE_CORPUS=1 to regenerate the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzHandshake")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for name, b := range handshakeSeeds() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
	}
}
