package transport

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
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
// In cluster-key mode two more messages follow. The dialer sends a count
// (uint8) and, for each of its keys, primary first,
// HMAC-SHA256(key, "client proof" || transcript), where the transcript is
// both hellos. The listener takes the first proof made with a key it
// holds, so two nodes connect whenever they share any key, preferring the
// dialer's primary: a rotation works in whatever order the nodes learn
// the new key. It answers statusOK and its own HMAC with that key and
// label "server proof", which the dialer checks; or statusRefused, and
// closes. Both nonces enter every HMAC, so a recorded handshake replayed
// to either side fails, and the distinct labels stop a listener's proof
// from being reflected back as a dialer's. Then each side derives one
// AES-256-GCM key per direction with HKDF-SHA256 from the shared key,
// salted with the transcript: fresh keys for every connection, so frame
// counters can serve as nonces.

// Protocol versions. A node refuses peers older than minProtocolVersion;
// a newer peer is expected to speak down to this node's version.
const (
	protocolVersion    = 2 // 2: hellos carry a node name, error frames a code
	minProtocolVersion = 2
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
	proofSize = sha256.Size
	maxKeys   = 16 // cluster keys a node may hold, so a key offer stays small

	labelClientProof = "troupe transport v1 client proof"
	labelServerProof = "troupe transport v1 server proof"
	labelClientKey   = "troupe transport v1 client to server"
	labelServerKey   = "troupe transport v1 server to client"
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
	var key []byte
	if dialer {
		offer := []byte{byte(len(keys))}
		for _, k := range keys {
			offer = append(offer, proof(k, labelClientProof, transcript)...)
		}
		if err := writeAll(w, offer); err != nil {
			return session{}, err
		}
		var reply [1 + proofSize]byte
		if err := readAll(r, reply[:]); err != nil {
			return session{}, err
		}
		if reply[0] != statusOK {
			return session{}, fmt.Errorf("%w: peer holds none of this node's cluster keys", ErrHandshake)
		}
		key = matchProof(reply[1:], keys, labelServerProof, transcript)
		if key == nil {
			return session{}, fmt.Errorf("%w: peer did not prove a cluster key", ErrHandshake)
		}
	} else {
		var n [1]byte
		if err := readAll(r, n[:]); err != nil {
			return session{}, err
		}
		if n[0] == 0 || n[0] > maxKeys {
			return session{}, fmt.Errorf("%w: peer offered %d key proofs", ErrHandshake, n[0])
		}
		offer := make([]byte, int(n[0])*proofSize)
		if err := readAll(r, offer); err != nil {
			return session{}, err
		}
		for p := range slices.Chunk(offer, proofSize) {
			if key = matchProof(p, keys, labelClientProof, transcript); key != nil {
				break
			}
		}
		reply := make([]byte, 1, 1+proofSize)
		if key == nil {
			reply[0] = statusRefused
			_ = writeAll(w, append(reply, make([]byte, proofSize)...))
			return session{}, fmt.Errorf("%w: peer proved none of this node's cluster keys", ErrHandshake)
		}
		reply[0] = statusOK
		if err := writeAll(w, append(reply, proof(key, labelServerProof, transcript)...)); err != nil {
			return session{}, err
		}
	}

	c2s, err := sessionAEAD(key, transcript, labelClientKey)
	if err != nil {
		return session{}, err
	}
	s2c, err := sessionAEAD(key, transcript, labelServerKey)
	if err != nil {
		return session{}, err
	}
	if dialer {
		s.seal, s.open = c2s, s2c
	} else {
		s.seal, s.open = s2c, c2s
	}
	s.key = key
	return s, nil
}

// matchProof returns the key among keys that made p, or nil.
func matchProof(p []byte, keys [][]byte, label string, transcript []byte) []byte {
	for _, k := range keys {
		if hmac.Equal(p, proof(k, label, transcript)) {
			return k
		}
	}
	return nil
}

func proof(key []byte, label string, transcript []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	m.Write(transcript)
	return m.Sum(nil)
}

func sessionAEAD(key, transcript []byte, label string) (cipher.AEAD, error) {
	k, err := hkdf.Key(sha256.New, key, transcript, label, 32)
	if err != nil {
		return nil, fmt.Errorf("%w: deriving session key: %w", ErrHandshake, err)
	}
	block, err := aes.NewCipher(k)
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
