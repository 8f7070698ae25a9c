package transport

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/flynn/noise"
)

// The handshake opens every connection, after the TLS handshake if any.
// Each side sends a hello, the dialer first; the listener answers only a
// hello that starts with the magic:
//
//	magic     "TRPE"
//	version   uint8   protocol version of the sender
//	mode      uint8   plaintext, cluster key or TLS; both sides must agree
//	maxFrame  uint32  the sender's MaxFrameSize
//	nonce     [32]byte fresh random bytes
//	nameLen   uint8   length of the name that follows
//	name      the sender's node name (Config.Name), at most 255 bytes
//
// The name is what the peer's handlers see as the sender of each request.
// Both hellos, names included, enter the transcript that the key proofs
// sign, so in cluster-key mode a name cannot be changed on the way; it is
// still only as trustworthy as the holders of the cluster key.
// In cluster-key mode a Noise handshake follows
// (Noise_NNpsk0_25519_AESGCM_SHA256, https://noiseprotocol.org): the
// pre-shared key is derived from a cluster key, both hellos are the
// prologue, and each side contributes an ephemeral X25519 key, so the
// connection's keys depend on a Diffie-Hellman secret that is gone when
// the connection is: someone who records traffic and later learns the
// cluster key cannot decrypt it (forward secrecy). A dialer may hold
// several keys during a rotation, so it sends a count (uint8) and one
// first Noise message per key, primary first; the listener answers the
// first one that a key of its own opens with statusOK, that message's
// index (uint8) and the second Noise message, or with statusRefused, and
// closes. Two nodes thus connect whenever they share any key, preferring
// the dialer's primary. The nonces in the hellos (the prologue) make a
// recorded handshake useless when replayed to either side. Frames are
// then sealed with AES-256-GCM under the two keys the handshake agreed on,
// one per direction, with frame counters as nonces.

// Protocol versions. A node refuses peers older than minProtocolVersion;
// a newer peer is expected to speak down to this node's version.
const (
	// 2: hellos carry a node name, error frames a code.
	// 3: cluster-key mode runs a Noise handshake (forward secrecy).
	protocolVersion    = 3
	minProtocolVersion = 3
)

// Security modes, as sent in the hello. Append only.
const (
	modePlain uint8 = 1
	modeKey   uint8 = 2
	modeTLS   uint8 = 3
)

// Answers of a listener to a dialer's key proof. Append only.
const (
	statusOK      uint8 = 1
	statusRefused uint8 = 2
)

const (
	helloSize = 4 + 1 + 1 + 4 + 32 // the fixed part, before the name
	maxName   = 255
	maxKeys   = 16 // cluster keys a node may hold, so a key offer stays small

	labelPSK = "troupe transport v3 psk"
)

var magic = [4]byte{'T', 'R', 'P', 'E'}

type hello struct {
	version  uint8
	mode     uint8
	maxFrame uint32
	nonce    [32]byte
	name     string
}

// marshal returns the hello's bytes: the fixed part, then the name.
func (h hello) marshal() []byte {
	b := make([]byte, helloSize, helloSize+1+len(h.name))
	copy(b[:4], magic[:])
	b[4] = h.version
	b[5] = h.mode
	binary.BigEndian.PutUint32(b[6:10], h.maxFrame)
	copy(b[10:], h.nonce[:])
	b = append(b, byte(len(h.name)))
	return append(b, h.name...)
}

// parseHello parses the fixed part of a hello; the name follows it.
func parseHello(b [helloSize]byte) (hello, error) {
	if [4]byte(b[:4]) != magic {
		return hello{}, fmt.Errorf("%w: not a troupe transport peer (or TLS on one side only)", ErrHandshake)
	}
	h := hello{version: b[4], mode: b[5], maxFrame: binary.BigEndian.Uint32(b[6:10])}
	copy(h.nonce[:], b[10:])
	return h, nil
}

// readHello reads a peer's hello, name included, and returns it with its
// bytes for the transcript. A stranger's bytes are rejected on the magic,
// before any name is read.
func readHello(r io.Reader) (hello, []byte, error) {
	var fixed [helloSize + 1]byte
	if err := readAll(r, fixed[:]); err != nil {
		return hello{}, nil, err
	}
	h, err := parseHello([helloSize]byte(fixed[:helloSize]))
	if err != nil {
		return hello{}, nil, err
	}
	raw := make([]byte, helloSize+1+int(fixed[helloSize]))
	copy(raw, fixed[:])
	if err := readAll(r, raw[helloSize+1:]); err != nil {
		return hello{}, nil, err
	}
	h.name = string(raw[helloSize+1:])
	return h, raw, nil
}

func modeName(m uint8) string {
	switch m {
	case modePlain:
		return "plaintext"
	case modeKey:
		return "cluster key"
	case modeTLS:
		return "TLS"
	}
	return fmt.Sprintf("unknown mode %d", m)
}

// session is what a handshake agreed on.
type session struct {
	peerMax    int         // the peer's MaxFrameSize
	peerName   string      // the peer's node name, from its hello
	seal, open cipher.AEAD // nil unless in cluster-key mode
	key        []byte      // the cluster key both proved; nil unless in cluster-key mode
}

// handshake runs this node's side of the handshake over r and w. keys
// matter only in cluster-key mode; the dialer proves keys[0]. Every error
// wraps ErrHandshake.
func handshake(r io.Reader, w io.Writer, dialer bool, local hello, keys [][]byte) (session, error) {
	mine := local.marshal()
	if dialer {
		if err := writeAll(w, mine); err != nil {
			return session{}, err
		}
	}
	peer, theirs, err := readHello(r)
	if err != nil {
		return session{}, err // a stranger does not get our hello
	}
	if !dialer {
		if err := writeAll(w, mine); err != nil {
			return session{}, err
		}
	}
	switch {
	case peer.version < minProtocolVersion:
		return session{}, fmt.Errorf("%w: peer speaks protocol version %d, this node needs at least %d", ErrHandshake, peer.version, minProtocolVersion)
	case peer.mode != local.mode:
		return session{}, fmt.Errorf("%w: peer uses %s, this node uses %s", ErrHandshake, modeName(peer.mode), modeName(local.mode))
	case peer.maxFrame < minFrameSize:
		return session{}, fmt.Errorf("%w: peer accepts frames of only %d bytes", ErrHandshake, peer.maxFrame)
	}
	s := session{peerMax: int(peer.maxFrame), peerName: peer.name}
	if local.mode != modeKey {
		return s, nil
	}

	transcript := make([]byte, 0, len(mine)+len(theirs))
	if dialer {
		transcript = append(append(transcript, mine...), theirs...)
	} else {
		transcript = append(append(transcript, theirs...), mine...)
	}
	if dialer {
		return dialNoise(r, w, s, transcript, keys)
	}
	return acceptNoise(r, w, s, transcript, keys)
}

// noiseSuite is the handshake's Noise cipher suite:
// Noise_NNpsk0_25519_AESGCM_SHA256.
var noiseSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherAESGCM, noise.HashSHA256)

// Sizes of the two Noise messages: an ephemeral public key and the tag of
// an empty, encrypted payload.
const (
	noiseMsg1 = 32 + 16
	noiseMsg2 = 32 + 16
)

func newNoise(initiator bool, transcript, key []byte) (*noise.HandshakeState, error) {
	psk, err := hkdf.Key(sha256.New, key, nil, labelPSK, 32)
	if err != nil {
		return nil, fmt.Errorf("%w: deriving the pre-shared key: %w", ErrHandshake, err)
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:           noiseSuite,
		Pattern:               noise.HandshakeNN,
		Initiator:             initiator,
		Prologue:              transcript,
		PresharedKey:          psk,
		PresharedKeyPlacement: 0,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	return hs, nil
}

// dialNoise runs the dialer's side: one first message per key it holds,
// primary first, and the listener's answer to the one it could read.
func dialNoise(r io.Reader, w io.Writer, s session, transcript []byte, keys [][]byte) (session, error) {
	states := make([]*noise.HandshakeState, len(keys))
	offer := make([]byte, 1, 1+len(keys)*noiseMsg1)
	offer[0] = byte(len(keys))
	for i, k := range keys {
		hs, err := newNoise(true, transcript, k)
		if err != nil {
			return session{}, err
		}
		if offer, _, _, err = hs.WriteMessage(offer, nil); err != nil {
			return session{}, fmt.Errorf("%w: %w", ErrHandshake, err)
		}
		states[i] = hs
	}
	if err := writeAll(w, offer); err != nil {
		return session{}, err
	}
	var reply [2 + noiseMsg2]byte
	if err := readAll(r, reply[:]); err != nil {
		return session{}, err
	}
	if reply[0] != statusOK {
		return session{}, fmt.Errorf("%w: peer holds none of this node's cluster keys", ErrHandshake)
	}
	i := int(reply[1])
	if i >= len(states) {
		return session{}, fmt.Errorf("%w: peer chose key %d of %d", ErrHandshake, i, len(states))
	}
	_, toPeer, fromPeer, err := states[i].ReadMessage(nil, reply[2:])
	if err != nil || toPeer == nil {
		return session{}, fmt.Errorf("%w: peer did not prove a cluster key", ErrHandshake)
	}
	return withCiphers(s, keys[i], toPeer, fromPeer)
}

// acceptNoise runs the listener's side: it takes the first of the
// dialer's messages that one of its keys opens, and answers it.
func acceptNoise(r io.Reader, w io.Writer, s session, transcript []byte, keys [][]byte) (session, error) {
	var n [1]byte
	if err := readAll(r, n[:]); err != nil {
		return session{}, err
	}
	if n[0] == 0 || n[0] > maxKeys {
		return session{}, fmt.Errorf("%w: peer offered %d keys", ErrHandshake, n[0])
	}
	offer := make([]byte, int(n[0])*noiseMsg1)
	if err := readAll(r, offer); err != nil {
		return session{}, err
	}
	for i := range int(n[0]) {
		msg := offer[i*noiseMsg1 : (i+1)*noiseMsg1]
		for _, k := range keys {
			hs, err := newNoise(false, transcript, k)
			if err != nil {
				return session{}, err
			}
			if _, _, _, err := hs.ReadMessage(nil, msg); err != nil {
				continue // another key made it, or nobody's
			}
			reply, fromPeer, toPeer, err := hs.WriteMessage([]byte{statusOK, byte(i)}, nil)
			if err != nil {
				return session{}, fmt.Errorf("%w: %w", ErrHandshake, err)
			}
			if err := writeAll(w, reply); err != nil {
				return session{}, err
			}
			return withCiphers(s, k, toPeer, fromPeer)
		}
	}
	refusal := make([]byte, 2+noiseMsg2)
	refusal[0] = statusRefused
	_ = writeAll(w, refusal)
	return session{}, fmt.Errorf("%w: peer proved none of this node's cluster keys", ErrHandshake)
}

// withCiphers completes s with the keys that the handshake agreed on, one
// per direction. Frames are sealed with AES-256-GCM under those keys by
// the frame layer, whose counters are the nonces; the Noise cipher states
// themselves are not used after the handshake.
func withCiphers(s session, key []byte, send, recv *noise.CipherState) (session, error) {
	var err error
	if s.seal, err = gcm(send.UnsafeKey()); err != nil {
		return session{}, err
	}
	if s.open, err = gcm(recv.UnsafeKey()); err != nil {
		return session{}, err
	}
	s.key = key
	return s, nil
}

func gcm(k [32]byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(k[:])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	return aead, nil
}

func readAll(r io.Reader, b []byte) error {
	if _, err := io.ReadFull(r, b); err != nil {
		return fmt.Errorf("%w: peer closed or stalled during the handshake: %w", ErrHandshake, err)
	}
	return nil
}

func writeAll(w io.Writer, b []byte) error {
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	return nil
}
